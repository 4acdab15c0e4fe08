//! The HTTP external authorizer of CUSTOM AuthorizationPolicies (Istio's
//! `envoyExtAuthzHttp`), asked as Envoy's `ext_authz` filter asks it: a
//! request with the original method, the path behind `pathPrefix`, the
//! original Host, the listed headers and no body, sent through this
//! proxy's own outbound stack (so over mTLS to a meshed authorizer, with
//! its balancing and outlier detection). A 200 allows, and chosen headers
//! of the answer go on to the app or the client; any other answer is the
//! denial the client gets; no answer is `statusOnError` (or an allow with
//! `failOpen`).

use http_body_util::BodyExt;
use hyper::header::{CONTENT_LENGTH, HOST, HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode};

use crate::detect::Protocol;
use crate::http::Body;
use crate::inbound::Inbound;
use crate::outbound::http::send_own;
use api::authz::ext::header_listed;
use api::proto::ExtAuthz;

/// The most of an authorizer's answer read.
const MAX_BODY: usize = 64 * 1024;

/// What the authorizer decided.
pub(super) enum Verdict {
    /// Go on, with these headers set on the request and added to the
    /// response.
    Allow {
        upstream: Vec<(HeaderName, HeaderValue)>,
        downstream: Vec<(HeaderName, HeaderValue)>,
    },
    /// Answer this, for this reason (Envoy's `response_code_details`).
    Deny(Response<Body>, &'static str),
}

/// The parts of the original request the check reads.
pub(super) struct Original {
    method: hyper::Method,
    path: String,
    headers: HeaderMap,
}

impl Original {
    pub(super) fn of<B>(req: &Request<B>) -> Self {
        Self {
            method: req.method().clone(),
            path: req
                .uri()
                .path_and_query()
                .map_or("/", |p| p.as_str())
                .to_string(),
            headers: req.headers().clone(),
        }
    }
}

fn picked(headers: &HeaderMap, patterns: &[String]) -> Vec<(HeaderName, HeaderValue)> {
    headers
        .iter()
        .filter(|(n, _)| header_listed(patterns, n.as_str()))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect()
}

fn check_request(p: &ExtAuthz, o: &Original) -> anyhow::Result<Request<Body>> {
    let mut req = Request::builder()
        .method(o.method.clone())
        .uri(format!("{}{}", p.path_prefix, o.path))
        .body(crate::http::full(bytes::Bytes::new()))?;
    let h = req.headers_mut();
    if let Some(host) = o.headers.get(HOST) {
        h.insert(HOST, host.clone());
    }
    for (n, v) in picked(&o.headers, &p.include_request_headers) {
        h.append(n, v);
    }
    for (n, v) in &p.additional_headers {
        h.insert(
            HeaderName::try_from(n.as_str())?,
            HeaderValue::try_from(v.as_str())?,
        );
    }
    h.insert(CONTENT_LENGTH, HeaderValue::from_static("0"));
    Ok(req)
}

/// Sends the check through the outbound stack; the answer, its body read.
async fn send(
    ib: &Inbound,
    p: &ExtAuthz,
    req: Request<Body>,
) -> anyhow::Result<(hyper::http::response::Parts, bytes::Bytes)> {
    let resp = send_own(&ib.outbound, &p.host, p.port, Protocol::Http1, req).await?;
    let (parts, body) = resp.into_parts();
    let body = http_body_util::Limited::new(body, MAX_BODY)
        .collect()
        .await
        .map_err(|e| anyhow::anyhow!("reading the answer: {e}"))?
        .to_bytes();
    Ok((parts, body))
}

fn denial(
    status: StatusCode,
    headers: Vec<(HeaderName, HeaderValue)>,
    body: bytes::Bytes,
) -> Response<Body> {
    let mut r = Response::new(crate::http::full(body));
    *r.status_mut() = status;
    for (n, v) in headers {
        r.headers_mut().append(n, v);
    }
    r
}

/// Asks `p` about the request `o`.
pub(super) async fn check(ib: &Inbound, p: &ExtAuthz, o: &Original) -> Verdict {
    let timeout = p
        .timeout
        .as_ref()
        .map_or(std::time::Duration::from_secs(600), api::routing::from_wire);
    let answer = match check_request(p, o) {
        Ok(req) => tokio::time::timeout(timeout, send(ib, p, req))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {timeout:?}"))),
        Err(e) => Err(e),
    };
    match answer {
        Ok((parts, _)) if parts.status == StatusCode::OK => Verdict::Allow {
            upstream: picked(&parts.headers, &p.headers_to_upstream_on_allow),
            downstream: picked(&parts.headers, &p.headers_to_downstream_on_allow),
        },
        Ok((parts, body)) => {
            let headers = picked(&parts.headers, &p.headers_to_downstream_on_deny);
            Verdict::Deny(denial(parts.status, headers, body), "ext_authz_denied")
        }
        Err(e) if p.fail_open => {
            tracing::warn!(provider = %p.name, error = %e, "external authorizer failed: allowed (failOpen)");
            Verdict::Allow {
                upstream: Vec::new(),
                downstream: Vec::new(),
            }
        }
        Err(e) => {
            tracing::warn!(provider = %p.name, error = %e, "external authorizer failed: denied");
            let status = u16::try_from(p.status_on_error)
                .ok()
                .and_then(|s| StatusCode::from_u16(s).ok())
                .unwrap_or(StatusCode::FORBIDDEN);
            Verdict::Deny(
                denial(status, Vec::new(), bytes::Bytes::new()),
                "ext_authz_error",
            )
        }
    }
}
