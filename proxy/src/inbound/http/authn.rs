//! Request authentication: the tokens of a request to this workload
//! judged with [`api::jwt`] against the JWT issuers of its
//! RequestAuthentications. An invalid token answers 401 with the reason,
//! as Envoy's `jwt_authn` filter; a valid one leaves its identity in the
//! request's extensions for authorization, is removed unless the rule
//! forwards it, and is copied to the rule's output headers. Without a
//! token the request goes on without an identity.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use api::jwt::{Authenticated, Failure, Location};
use hyper::header::{CONTENT_TYPE, HeaderName, HeaderValue, WWW_AUTHENTICATE};
use hyper::{Request, Response, StatusCode};
use tower::{Layer, Service};

use super::authz::View;
use crate::http::{Body, Stack, service_head};
use crate::inbound::{Inbound, own_policy};

/// The authentication layer.
#[derive(Clone)]
pub(crate) struct Authn<S> {
    inner: S,
    ib: Arc<Inbound>,
}

impl<S> Authn<S> {
    /// Authenticates requests to `ib`'s workload.
    pub fn layer(ib: Arc<Inbound>) -> impl Layer<S, Service = Self> + Clone {
        tower::layer::layer_fn(move |inner| Self {
            inner,
            ib: ib.clone(),
        })
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The output headers of `a`'s rule, to set on the request.
fn outputs(a: &Authenticated<'_>) -> Vec<(String, String)> {
    let p = a.provider;
    let mut out = Vec::new();
    if !p.output_payload_to_header.is_empty() {
        out.push((p.output_payload_to_header.clone(), a.payload.clone()));
    }
    for c in &p.output_claim_to_headers {
        if let Some(v) = api::jwt::claim_header_value(&a.auth.claims, &c.claim) {
            out.push((c.header.clone(), v));
        }
    }
    out
}

/// What judging a request decided.
pub(crate) enum Outcome {
    /// No RequestAuthentication applies: as it is.
    NoRules,
    /// No token: as it is, without a request principal.
    NoToken,
    /// A valid token: its identity, the header to remove, the headers to
    /// set.
    Valid {
        auth: api::authz::Auth,
        strip: Option<String>,
        set: Vec<(String, String)>,
    },
    Refused(Failure),
}

/// What the workload's RequestAuthentications say of `req`, and the
/// output headers a client may not set itself.
pub(crate) fn judge<B>(ib: &Inbound, req: &Request<B>) -> (Outcome, Vec<String>) {
    own_policy(ib, |p| {
        if p.jwt.is_empty() {
            return (Outcome::NoRules, Vec::new());
        }
        // Output headers are the proxy's to set: a client's own are
        // dropped, so that the app can trust them.
        let spoofable = p
            .jwt
            .iter()
            .flat_map(|j| {
                std::iter::once(j.output_payload_to_header.clone())
                    .chain(j.output_claim_to_headers.iter().map(|c| c.header.clone()))
            })
            .filter(|h| !h.is_empty())
            .collect();
        let outcome = match api::jwt::authenticate(&p.jwt, &View(req), now()) {
            Ok(None) => Outcome::NoToken,
            Ok(Some(a)) => Outcome::Valid {
                set: outputs(&a),
                strip: match a.location {
                    Location::Header(h) if !a.provider.forward_original_token => {
                        Some(h.name.clone())
                    }
                    _ => None,
                },
                auth: a.auth,
            },
            Err(f) => Outcome::Refused(f),
        };
        (outcome, spoofable)
    })
    .unwrap_or((Outcome::NoRules, Vec::new()))
}

/// Envoy's refusal of `req`.
fn refused<B>(f: Failure, req: &Request<B>) -> Response<Body> {
    let details = format!(
        "jwt_authn_access_denied{{{}}}",
        f.to_string().replace(' ', "_")
    );
    let mut r = Response::new(crate::http::full(f.to_string()));
    *r.status_mut() = StatusCode::UNAUTHORIZED;
    let h = r.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    h.insert(
        WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"mesh\", error=\"invalid_token\""),
    );
    super::refused(r, None, req, details)
}

impl<S> Service<Request<Body>> for Authn<S>
where
    S: Stack,
{
    service_head!(Infallible);

    fn call(&mut self, mut req: Request<Body>) -> Self::Future {
        let (outcome, spoofable) = judge(&self.ib, &req);
        for h in spoofable {
            req.headers_mut().remove(h.as_str());
        }
        match outcome {
            Outcome::NoRules | Outcome::NoToken => {}
            Outcome::Refused(f) => {
                tracing::debug!(reason = %f, path = %req.uri().path(), "token refused");
                self.ib.telemetry.metrics.unauthenticated(f.code());
                let r = refused(f, &req);
                return Box::pin(async move { Ok(r) });
            }
            Outcome::Valid { auth, strip, set } => {
                let headers = req.headers_mut();
                if let Some(h) = strip {
                    headers.remove(h.as_str());
                }
                for (name, value) in set {
                    if let (Ok(n), Ok(v)) = (
                        HeaderName::try_from(name.as_str()),
                        HeaderValue::try_from(value.as_str()),
                    ) {
                        headers.insert(n, v);
                    }
                }
                req.extensions_mut().insert(auth);
            }
        }
        Box::pin(self.inner.call(req))
    }
}
