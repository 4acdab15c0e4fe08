//! Fault injection: the selected route's delay and abort, each on its
//! share of requests, before timeouts and retries (which never see them).

use std::convert::Infallible;

use crate::http::{Stack, service_head};
use bytes::Bytes;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tower::{Layer, Service};

use super::route::plain;
use super::{Selected, StreamInfo};
use crate::http::Body;
use crate::http::stream_info::flags;
use crate::traffic::Abort;
use crate::traffic::split::hits;

/// The fault layer.
#[derive(Clone)]
pub(crate) struct Fault<S> {
    inner: S,
}

impl<S> Fault<S> {
    /// Injects the selected route's faults.
    pub fn layer() -> impl Layer<S, Service = Self> + Clone {
        tower::layer::layer_fn(|inner| Self { inner })
    }
}

/// What an injected abort answers.
pub(crate) fn abort_response(a: Abort) -> Response<Body> {
    match a {
        Abort::Http(s) => plain(s, Bytes::from_static(b"fault filter abort\n")),
        Abort::Grpc(code) => {
            // Trailers-only: the status rides the headers of a 200.
            let mut r = plain(StatusCode::OK, Bytes::new());
            let h = r.headers_mut();
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            h.insert("grpc-status", HeaderValue::from(code));
            h.insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            r
        }
    }
}

impl<S> Service<Request<Body>> for Fault<S>
where
    S: Stack,
{
    service_head!(Infallible);

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let fault = req
            .extensions()
            .get::<Selected>()
            .map(|s| s.route().fault)
            .unwrap_or_default();
        let mut inner = self.inner.clone();
        Box::pin(async move {
            let mut rng = fastrand::Rng::new();
            let mut delayed = false;
            if let Some((delay, pct)) = fault.delay
                && hits(pct, &mut rng)
            {
                delayed = true;
                tokio::time::sleep(delay).await;
            }
            let mut resp = match fault.abort {
                Some((abort, pct)) if hits(pct, &mut rng) => {
                    StreamInfo::flagged(abort_response(abort), flags::ABORT)
                }
                _ => inner.call(req).await?,
            };
            if delayed {
                StreamInfo::of(&mut resp).flags.insert(0, flags::DELAY);
            }
            Ok(resp)
        })
    }
}
