//! The bottom of the inbound stack: the request to the app, in the
//! protocol the client used (HTTP/1.1 through a keep-alive pool, HTTP/2
//! over one connection per port); a plaintext upgrade (WebSocket) on a
//! connection of its own. A failure is 503 (`UF`).

use std::convert::Infallible;
use std::sync::Arc;

use crate::http::service_head;
use http_body_util::BodyExt;
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, Response, StatusCode, Version};
use tower::Service;

use super::origin::Forward;
use crate::connect::{Upstreams, plain};
use crate::http::stream_info::{StreamInfo, flags};
use crate::http::{Body, error_response, is_upgrade, strip_hop_by_hop};
use crate::traffic::limits::{CONNECT_TIMEOUT, ConnSettings};

/// The app service.
#[derive(Clone)]
pub(crate) struct App {
    upstreams: Arc<Upstreams>,
}

impl App {
    /// Reaches the app through `upstreams`' pools.
    pub fn new(upstreams: Arc<Upstreams>) -> Self {
        Self { upstreams }
    }
}

impl Service<Request<Body>> for App {
    service_head!(Infallible);

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let upstreams = self.upstreams.clone();
        Box::pin(async move {
            Ok(match forward(&upstreams, req).await {
                Ok(r) => r,
                Err(e) => StreamInfo::flagged(
                    error_response(StatusCode::SERVICE_UNAVAILABLE, &e),
                    flags::CONNECT_FAILURE,
                ),
            })
        })
    }
}

async fn forward(upstreams: &Upstreams, req: Request<Body>) -> Result<Response<Body>, String> {
    let Some(to) = req.extensions().get::<Forward>().cloned() else {
        return Err("no destination in the pod".into());
    };
    let app = to.app;
    let failed = |e: &dyn std::fmt::Display| format!("app {app}: {e}");
    if to.plain && is_upgrade(&req) {
        let io = plain(app, CONNECT_TIMEOUT).await.map_err(|e| failed(&e))?;
        return crate::http::upgrade::tunnel_over(Box::new(io), req)
            .await
            .map_err(|e| failed(&e));
    }
    let (mut parts, body) = req.into_parts();
    if to.http1 {
        // Keep what the client addressed as the Host header.
        if !parts.headers.contains_key(HOST)
            && let Some(a) = parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            parts.headers.insert(HOST, a);
        }
        let pq = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = format!("http://{app}{pq}")
            .parse()
            .map_err(|e| format!("bad URI: {e}"))?;
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        return upstreams
            .http1
            .request(Request::from_parts(parts, body))
            .await
            .map(|r| r.map(BodyExt::boxed))
            .map_err(|e| failed(&e));
    }
    let mut sender = upstreams
        .direct_h2
        .get(app, &ConnSettings::default(), || async move {
            plain(app, CONNECT_TIMEOUT).await
        })
        .await
        .map_err(|e| failed(&e))?;
    sender
        .send_request(Request::from_parts(parts, body))
        .await
        .map(|r| r.map(BodyExt::boxed))
        .map_err(|e| failed(&e))
}
