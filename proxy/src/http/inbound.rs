//! Inbound HTTP, one path for both ways in: requests from peer proxies on
//! their shared HTTP/2 mTLS connection (the app port and the client app's
//! protocol ride in headers), and plaintext HTTP from outside the mesh on
//! the redirected port (parsed here with the edge's limits, never passed
//! through as bytes). Each request is rate limited, forwarded to the app
//! in the protocol the client used (HTTP/1.1 through a keep-alive pool,
//! HTTP/2 over one connection per port), and counted.

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
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Body, DST_PORT, ORIG_PROTO, ROUTE, error_response, limits};
use crate::detect::Protocol;
use crate::metrics::RequestLabels;
use crate::traffic::limits::ConnSettings;
use crate::{Ctx, outbound, ports};

/// Where a connection's requests come from and go.
#[derive(Clone)]
enum Origin {
    /// A peer proxy, over mTLS: the app port is in each request.
    Peer {
        identity: Arc<SpiffeId>,
        local: IpAddr,
    },
    /// A client outside the mesh, in plaintext, to `app` in `proto`.
    Plain { app: SocketAddr, proto: Protocol },
}

/// Serves one peer proxy's HTTP/2 connection.
pub async fn serve<IO>(ctx: Arc<Ctx>, io: IO, peer: SpiffeId, local: IpAddr)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let origin = Origin::Peer {
        identity: Arc::new(peer),
        local,
    };
    let drain = ctx.drain.clone();
    let svc = service(ctx, origin);
    let conn = limits::peer_h2_server().serve_connection(TokioIo::new(io), svc);
    if let Err(e) = crate::drain::serve(conn, &drain).await {
        tracing::debug!(error = %e, "inbound HTTP/2 connection ended");
    }
}

/// Serves a plaintext HTTP connection from outside the mesh, redirected
/// from `app`, with the edge's limits (the parser answers malformed
/// requests with 400, oversized headers with 431, slow ones with 408).
pub async fn serve_plain<IO>(ctx: Arc<Ctx>, io: IO, app: SocketAddr, proto: Protocol)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let drain = ctx.drain.clone();
    let svc = service(ctx, Origin::Plain { app, proto });
    if let Err(e) = limits::serve(io, svc, proto, &drain).await {
        tracing::debug!(error = %e, "inbound plaintext HTTP connection ended");
    }
}

fn service(
    ctx: Arc<Ctx>,
    origin: Origin,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<Body>,
    Error = Infallible,
    Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send,
> + Clone {
    service_fn(move |req| {
        let (ctx, origin) = (ctx.clone(), origin.clone());
        async move { Ok::<_, Infallible>(handle(&ctx, &origin, req).await) }
    })
}

async fn handle(ctx: &Ctx, origin: &Origin, req: Request<Incoming>) -> Response<Body> {
    let started = Instant::now();
    let grpc = super::is_grpc(&req);
    let mut req = req;
    // Only a peer proxy may name the route or the app port; an outsider's
    // values are dropped.
    let route = req.headers_mut().remove(ROUTE);
    let route = match origin {
        Origin::Peer { .. } => route,
        Origin::Plain { .. } => {
            req.headers_mut().remove(DST_PORT);
            req.headers_mut().remove(ORIG_PROTO);
            None
        }
    };
    let limited = rate_limited(ctx, &req, route.as_ref().and_then(|v| v.to_str().ok()));
    let resp = match limited {
        Some(status) => {
            let mut r = error_response(status, "local rate limit");
            r.headers_mut().remove(super::PROXY_ERROR);
            r.headers_mut()
                .insert("x-ratelimit-limited", HeaderValue::from_static("true"));
            r
        }
        None => forward(ctx, origin, req).await,
    };
    let me = ctx.identity.id();
    let principal = me.to_string();
    let (peer_ns, peer_s, security) = match origin {
        Origin::Peer { identity, .. } => (
            identity.namespace().to_string(),
            identity.to_string(),
            "mutual_tls",
        ),
        Origin::Plain { .. } => ("unknown".into(), "unknown".into(), "none"),
    };
    let code = resp.status().as_u16().to_string();
    ctx.metrics.request(
        &RequestLabels([
            "destination",
            "unknown",
            &peer_ns,
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
            security,
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

/// The app's address and whether to speak HTTP/1 to it.
fn app_of<B>(origin: &Origin, req: &mut Request<B>) -> Result<(SocketAddr, bool), &'static str> {
    match origin {
        Origin::Plain { app, proto } => Ok((*app, *proto != Protocol::Http2)),
        Origin::Peer { local, .. } => {
            let port = req
                .headers_mut()
                .remove(DST_PORT)
                .and_then(|v| v.to_str().ok()?.parse::<u16>().ok())
                .filter(|p| ![ports::MTLS, ports::INBOUND, ports::OUTBOUND].contains(p))
                .ok_or("missing or invalid x-mesh-dst-port")?;
            let http1 = req
                .headers_mut()
                .remove(ORIG_PROTO)
                .is_some_and(|v| v == "HTTP/1.1");
            Ok((SocketAddr::new(*local, port), http1))
        }
    }
}

async fn forward(ctx: &Ctx, origin: &Origin, mut req: Request<Incoming>) -> Response<Body> {
    let (app, http1) = match app_of(origin, &mut req) {
        Ok(a) => a,
        Err(e) => return error_response(StatusCode::BAD_REQUEST, e),
    };
    if matches!(origin, Origin::Plain { .. }) && super::is_upgrade(&req) {
        return upgrade(app, req).await;
    }
    let (mut parts, body) = req.into_parts();
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
        super::strip_hop_by_hop(&mut parts.headers);
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

/// A plaintext upgrade (WebSocket) to the app, on a connection of its own.
async fn upgrade(app: SocketAddr, req: Request<Incoming>) -> Response<Body> {
    let io = match outbound::connect_plain(app, crate::traffic::limits::CONNECT_TIMEOUT).await {
        Ok(io) => io,
        Err(e) => {
            return error_response(StatusCode::SERVICE_UNAVAILABLE, &format!("app {app}: {e}"));
        }
    };
    match super::send::tunnel_over(Box::new(io), req).await {
        Ok(r) => r,
        Err(e) => error_response(StatusCode::SERVICE_UNAVAILABLE, &format!("app {app}: {e}")),
    }
}
