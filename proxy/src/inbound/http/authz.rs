//! This workload's AuthorizationPolicies, from its own discovery
//! resource, judged per request with [`api::authz`]: a denial answers
//! 403 `RBAC: access denied` with the `RBAC` response flag, as Envoy's
//! RBAC filter, and never reaches the app.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use api::authz::{Decision, Http};
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tower::{Layer, Service};

use super::origin::Forward;
use crate::http::stream_info::{StreamInfo, flags};
use crate::http::{Body, Stack, service_head};
use crate::inbound::Inbound;

/// The authorization layer.
#[derive(Clone)]
pub(crate) struct Authz<S> {
    inner: S,
    ib: Arc<Inbound>,
    /// The client's principal (without `spiffe://`; empty in plaintext),
    /// read once per connection.
    principal: Arc<str>,
    /// The client's address.
    client: IpAddr,
}

impl<S> Authz<S> {
    /// Judges requests from `origin` to `ib`'s workload.
    pub fn layer(ib: Arc<Inbound>, origin: super::Origin) -> impl Layer<S, Service = Self> + Clone {
        let (principal, client) = origin.peer();
        let principal: Arc<str> = principal.into();
        tower::layer::layer_fn(move |inner| Self {
            inner,
            ib: ib.clone(),
            principal: principal.clone(),
            client,
        })
    }
}

/// A hyper request as the evaluation reads it.
pub(super) struct View<'a, B>(pub &'a Request<B>);

impl<B> Http for View<'_, B> {
    fn host(&self) -> &str {
        self.0
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| self.0.headers().get(HOST)?.to_str().ok())
            .unwrap_or_default()
    }
    fn method(&self) -> &str {
        self.0.method().as_str()
    }
    fn path(&self) -> &str {
        self.0.uri().path_and_query().map_or("/", |p| p.as_str())
    }
    fn header(&self, name: &str) -> Vec<&str> {
        self.0
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect()
    }
}

/// The decision on `req`, `None` when no policy applies.
fn judge<B>(ib: &Inbound, principal: &str, client: IpAddr, req: &Request<B>) -> Option<Decision> {
    let app = req.extensions().get::<Forward>()?.app;
    let view = View(req);
    let mut r = crate::inbound::request(principal, client, app, Some(&view));
    r.auth = req.extensions().get::<api::authz::Auth>();
    crate::inbound::authorize(ib, &r)
}

/// Envoy's RBAC refusal.
fn denied() -> Response<Body> {
    use http_body_util::BodyExt;
    let mut r = Response::new(
        http_body_util::Full::new(bytes::Bytes::from_static(b"RBAC: access denied"))
            .map_err(|n| match n {})
            .boxed(),
    );
    *r.status_mut() = StatusCode::FORBIDDEN;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    StreamInfo::flagged(r, flags::RBAC)
}

impl<S> Service<Request<Body>> for Authz<S>
where
    S: Stack,
{
    service_head!(Infallible);

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        match judge(&self.ib, &self.principal, self.client, &req) {
            Some(d) if !d.allowed => {
                let reason = d.reason.map(|r| r.policy).unwrap_or_default();
                tracing::debug!(policy = %reason, path = %req.uri().path(), "denied by authorization policy");
                self.ib.telemetry.metrics.denied(&reason);
                Box::pin(async move { Ok(denied()) })
            }
            d => {
                if let Some(d) = d.filter(|d| !d.audited.is_empty()) {
                    tracing::info!(policies = ?d.audited, path = %req.uri().path(), "audited request");
                }
                Box::pin(self.inner.call(req))
            }
        }
    }
}

/// The client's principal (without `spiffe://`; empty in plaintext) and
/// address.
impl super::Origin {
    fn peer(&self) -> (String, IpAddr) {
        match self {
            super::Origin::Peer {
                identity, client, ..
            } => (
                identity
                    .to_string()
                    .trim_start_matches("spiffe://")
                    .to_string(),
                *client,
            ),
            super::Origin::Plain { client, .. } => (String::new(), *client),
        }
    }
}
