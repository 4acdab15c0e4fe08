//! Mirrors: a copy of the request, on each mirror's share of requests,
//! to the mirror's destination with Istio's shadow authority
//! (`host-shadow[:port]`), once per request and fire and forget: its
//! answer and its failure go nowhere. The copy is sent when the body was
//! recorded whole, through the same try stack as the request.

use std::convert::Infallible;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, Uri};
use tower::{Layer, Service, ServiceExt};

use super::record::Recorded;
use super::{Failure, Head, Selected, To, Tries};
use crate::http::Body;
use crate::traffic::matching::authority;
use crate::traffic::split::hits;

/// How long a mirror waits for the body and for its answer.
const MIRROR_TIMEOUT: Duration = Duration::from_secs(30);

/// The mirroring layer.
#[derive(Clone)]
pub(crate) struct Mirror<S, T> {
    inner: S,
    tries: T,
}

impl<S, T: Clone> Mirror<S, T> {
    /// Sends copies through `tries`.
    pub fn layer(tries: T) -> impl Layer<S, Service = Self> + Clone {
        tower::layer::layer_fn(move |inner| Self {
            inner,
            tries: tries.clone(),
        })
    }
}

/// `req`'s head with Istio's shadow authority.
fn shadow_head<B>(req: &Request<B>) -> Head {
    let mut head = Head::of(req);
    let auth = authority(req).to_string();
    let shadow = match auth.rsplit_once(':') {
        Some((h, p)) if p.parse::<u16>().is_ok() => format!("{h}-shadow:{p}"),
        _ => format!("{auth}-shadow"),
    };
    if let Ok(v) = HeaderValue::try_from(shadow.as_str()) {
        head.headers.insert(header::HOST, v);
    }
    if head.uri.authority().is_some() {
        let mut parts = head.uri.clone().into_parts();
        if let Ok(a) = shadow.parse() {
            parts.authority = Some(a);
            if let Ok(u) = Uri::from_parts(parts) {
                head.uri = u;
            }
        }
    }
    head
}

impl<S, T> Service<Request<Body>> for Mirror<S, T>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible>,
    T: Service<Request<Body>, Response = Response<Body>, Error = Failure> + Clone + Send + 'static,
    T::Future: Send,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = S::Future;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        if let (Some(selected), Some(Recorded(tape))) = (
            req.extensions().get::<Selected>(),
            req.extensions().get::<Recorded>(),
        ) {
            let mut rng = fastrand::Rng::new();
            for (i, m) in selected.route().mirrors.iter().enumerate() {
                if !hits(m.percent, &mut rng) {
                    continue;
                }
                let mut head = shadow_head(&req);
                head.selected = Some(Selected {
                    to: To::Mirror(i),
                    ..selected.clone()
                });
                let (tape, tries) = (tape.clone(), self.tries.clone());
                tokio::spawn(async move {
                    let Ok(Some(body)) =
                        tokio::time::timeout(MIRROR_TIMEOUT, tape.replay_when_done()).await
                    else {
                        return;
                    };
                    let mut copy = head.with(body);
                    copy.extensions_mut().insert(Tries::default());
                    match tokio::time::timeout(MIRROR_TIMEOUT, tries.oneshot(copy)).await {
                        // Drain so the connection is reusable.
                        Ok(Ok(r)) => {
                            let _ = r.into_body().collect().await;
                        }
                        Ok(Err(e)) => tracing::debug!(?e, "mirror failed"),
                        Err(_) => tracing::debug!("mirror timed out"),
                    }
                });
            }
        }
        self.inner.call(req)
    }
}
