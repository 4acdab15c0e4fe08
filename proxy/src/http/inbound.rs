//! Inbound HTTP: requests from peer proxies on their shared HTTP/2 mTLS
//! connection, forwarded to the app on the port they name, in the protocol
//! the client app used (HTTP/1.1 through a keep-alive pool, HTTP/2 over one
//! connection per port).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use api::spiffe::SpiffeId;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Body, DST_PORT, ORIG_PROTO, ROUTE, error_response};
use crate::metrics::RequestLabels;
use crate::traffic::limits::ConnSettings;
use crate::{Ctx, outbound, ports};

/// Serves one peer's HTTP/2 connection.
pub async fn serve<IO>(ctx: Arc<Ctx>, io: IO, peer: SpiffeId, local: IpAddr)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = Arc::new(peer);
    let svc = service_fn(move |req| {
        let (ctx, peer) = (ctx.clone(), peer.clone());
        async move { Ok::<_, Infallible>(handle(&ctx, &peer, local, req).await) }
    });
    if let Err(e) = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await
    {
        tracing::debug!(error = %e, "inbound HTTP/2 connection ended");
    }
}

async fn handle(
    ctx: &Ctx,
    peer: &SpiffeId,
    local: IpAddr,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let grpc = super::is_grpc(&req);
    let mut req = req;
    let route = req.headers_mut().remove(ROUTE);
    let limited = rate_limited(ctx, &req, route.as_ref().and_then(|v| v.to_str().ok()));
    let resp = match limited {
        Some(status) => {
            let mut r = error_response(status, "local rate limit");
            r.headers_mut().remove(super::PROXY_ERROR);
            r.headers_mut()
                .insert("x-ratelimit-limited", HeaderValue::from_static("true"));
            r
        }
        None => forward(ctx, local, req).await,
    };
    let me = ctx.identity.id();
    let (principal, peer_s) = (me.to_string(), peer.to_string());
    let code = resp.status().as_u16().to_string();
    ctx.metrics.request(
        &RequestLabels([
            "destination",
            "unknown",
            peer.namespace(),
            &peer_s,
            "unknown",
            &ctx.workload,
            me.namespace(),
            &principal,
            if grpc { "grpc" } else { "http" },
            &code,
            if limited.is_some() {
                "RL"
            } else if resp.headers().contains_key(super::PROXY_ERROR) {
                "UF"
            } else {
                "-"
            },
            "mutual_tls",
        ]),
        started.elapsed(),
    );
    resp
}

/// The refusal status when this workload's LocalRateLimit refuses `req`.
fn rate_limited<B>(ctx: &Ctx, req: &Request<B>, route: Option<&str>) -> Option<StatusCode> {
    let me = ctx.discovery.current(ctx.pod_ip)?;
    let api::discovery::Resolved::Workload(w) = &me.resolved else {
        return None;
    };
    let limiters = ctx.rate_limits.get(&me.version, w.policy.as_deref());
    let now = std::time::Instant::now();
    limiters.1.iter().find_map(|l| {
        l.check(req, route, now)
            .err()
            .inspect(|_| tracing::debug!(policy = %l.policy, "rate limited"))
    })
}

async fn forward(ctx: &Ctx, local: IpAddr, req: Request<Incoming>) -> Response<Body> {
    let (mut parts, body) = req.into_parts();
    let port = parts
        .headers
        .remove(DST_PORT)
        .and_then(|v| v.to_str().ok()?.parse::<u16>().ok());
    let Some(port) = port.filter(|p| ![ports::MTLS, ports::INBOUND, ports::OUTBOUND].contains(p))
    else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "missing or invalid x-mesh-dst-port",
        );
    };
    let http1 = parts
        .headers
        .remove(ORIG_PROTO)
        .is_some_and(|v| v == "HTTP/1.1");
    let app = SocketAddr::new(local, port);
    if http1 {
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
        parts.uri = match format!("http://{app}{pq}").parse() {
            Ok(u) => u,
            Err(e) => return error_response(StatusCode::BAD_REQUEST, &format!("bad URI: {e}")),
        };
        parts.version = Version::HTTP_11;
        return match ctx
            .http1
            .request(Request::from_parts(parts, body.boxed()))
            .await
        {
            Ok(r) => r.map(BodyExt::boxed),
            Err(e) => error_response(StatusCode::SERVICE_UNAVAILABLE, &format!("app {app}: {e}")),
        };
    }
    let sender = ctx
        .direct_h2
        .get(app, &ConnSettings::default(), || async move {
            outbound::connect_plain(app, crate::traffic::limits::CONNECT_TIMEOUT).await
        })
        .await;
    match sender {
        Ok(mut s) => match s
            .send_request(Request::from_parts(parts, body.boxed()))
            .await
        {
            Ok(r) => r.map(BodyExt::boxed),
            Err(e) => error_response(StatusCode::SERVICE_UNAVAILABLE, &format!("app {app}: {e}")),
        },
        Err(e) => error_response(StatusCode::SERVICE_UNAVAILABLE, &format!("app {app}: {e}")),
    }
}
