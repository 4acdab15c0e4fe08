//! This workload's AuthorizationPolicies, from its own discovery
//! resource, judged per request with [`api::authz`]: a denial answers
//! 403 `RBAC: access denied` with the `RBAC` response flag, as Envoy's
//! RBAC filter, and never reaches the app. A matching CUSTOM policy asks
//! its external authorizer first ([`ext_authz`](super::ext_authz)); a
//! CUSTOM policy whose provider is unknown denies.

use std::convert::Infallible;
use std::net::IpAddr;
use std::sync::Arc;

use api::authz::{Decision, Http};
use api::proto::ExtAuthz;
use hyper::header::{CONTENT_TYPE, HOST, HeaderValue};
use hyper::{Request, Response, StatusCode};
use tower::{Layer, Service, ServiceExt};

use super::ext_authz::{self, Original, Verdict};
use super::origin::Forward;
use crate::http::stream_info::flags;
use crate::http::{Body, Stack, service_head};
use crate::inbound::{Inbound, own_policy};

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
pub(crate) struct View<'a, B>(pub &'a Request<B>);

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

/// Envoy's RBAC refusal of `req`, for `details`.
fn denied<B>(req: &Request<B>, details: String) -> Response<Body> {
    let mut r = Response::new(crate::http::full(&b"RBAC: access denied"[..]));
    *r.status_mut() = StatusCode::FORBIDDEN;
    r.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    super::refused(r, Some(flags::RBAC), req, details)
}

/// The external authorizer of the CUSTOM policy `name`; `Err` with why
/// it cannot be asked.
fn provider(ib: &Inbound, name: &str) -> Result<ExtAuthz, String> {
    own_policy(ib, |p| {
        let policy = p.authz.iter().find(|a| a.name == name)?;
        p.ext_authz
            .iter()
            .find(|e| e.name == policy.provider)
            .cloned()
    })
    .flatten()
    .ok_or_else(|| format!("no provider for {name}"))
    .and_then(|e| {
        if e.error.is_empty() {
            Ok(e)
        } else {
            Err(e.error)
        }
    })
}

/// The rest of a decision once the CUSTOM policy's authorizer allowed.
fn after_custom<B>(ib: &Inbound, d: &Decision, req: &Request<B>) -> Option<Response<Body>> {
    let path = req.uri().path();
    if d.allowed {
        if !d.audited.is_empty() {
            tracing::info!(policies = ?d.audited, %path, "audited request");
        }
        return None;
    }
    let (policy, rule) = d
        .reason
        .as_ref()
        .map_or(("", None), |r| (r.policy.as_str(), r.rule));
    tracing::debug!(%policy, %path, "denied by authorization policy");
    ib.telemetry.metrics.denied(policy);
    Some(denied(req, api::explain::rbac_details(policy, rule)))
}

impl<S> Service<Request<Body>> for Authz<S>
where
    S: Stack,
{
    service_head!(Infallible);

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let Some(d) = judge(&self.ib, &self.principal, self.client, &req) else {
            return Box::pin(self.inner.call(req));
        };
        let Some(custom) = d.custom.first().cloned() else {
            return match after_custom(&self.ib, &d, &req) {
                Some(r) => Box::pin(async move { Ok(r) }),
                None => Box::pin(self.inner.call(req)),
            };
        };
        let p = match provider(&self.ib, &custom) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(policy = %custom, error = %e, "CUSTOM policy without a usable provider: denied");
                self.ib.telemetry.metrics.denied(&custom);
                let r = denied(&req, format!("ext_authz_provider_unknown[{custom}]"));
                return Box::pin(async move { Ok(r) });
            }
        };
        let (ib, inner) = (self.ib.clone(), self.inner.clone());
        Box::pin(async move {
            match ext_authz::check(&ib, &p, &Original::of(&req)).await {
                Verdict::Deny(r, details) => {
                    tracing::debug!(policy = %custom, path = %req.uri().path(), "denied by the external authorizer");
                    ib.telemetry.metrics.denied(&custom);
                    Ok(super::refused(
                        r,
                        Some(flags::EXT_AUTHZ),
                        &req,
                        details.into(),
                    ))
                }
                Verdict::Allow {
                    upstream,
                    downstream,
                } => {
                    if let Some(r) = after_custom(&ib, &d, &req) {
                        return Ok(r);
                    }
                    for (n, v) in upstream {
                        req.headers_mut().insert(n, v);
                    }
                    let mut r = inner.oneshot(req).await?;
                    for (n, v) in downstream {
                        r.headers_mut().append(n, v);
                    }
                    Ok(r)
                }
            }
        })
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
