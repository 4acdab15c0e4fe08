//! Outbound HTTP: the app's connection served by hyper; each request
//! balanced on its own over the target's endpoints, sent to a meshed
//! endpoint over the peer's shared HTTP/2 mTLS connection, to an unmeshed
//! one directly. Upgrades get an opaque stream of their own.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use api::discovery::{Resolved, Workload};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderValue};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use super::{Body, DST_PORT, ORIG_PROTO, error_response, is_upgrade, strip_hop_by_hop};
use crate::detect::Protocol;
use crate::discovery::Target;
use crate::metrics::RequestLabels;
use crate::{Ctx, outbound, ports};

/// Serves the app's connection until it closes.
pub async fn serve(
    ctx: Arc<Ctx>,
    app: TcpStream,
    target: Arc<Target>,
    dst: SocketAddr,
    proto: Protocol,
) {
    let svc = service_fn(move |req| {
        let (ctx, target) = (ctx.clone(), target.clone());
        async move { Ok::<_, Infallible>(handle(&ctx, &target, dst, proto, req).await) }
    });
    let io = TokioIo::new(app);
    let result = match proto {
        Protocol::Http2 => {
            hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                .serve_connection(io, svc)
                .await
        }
        _ => {
            hyper::server::conn::http1::Builder::new()
                .serve_connection(io, svc)
                .with_upgrades()
                .await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "outbound HTTP connection ended");
    }
}

/// The service name for metrics, and where the request may go.
fn candidates(target: &Target, dst: SocketAddr) -> (String, Vec<(&Workload, u16)>) {
    let name = match &target.resolved {
        Resolved::Workload(w) => w.address.to_string(),
        Resolved::Service(svc) => svc.hostname.clone(),
    };
    (name, target.candidates(dst.port()))
}

async fn handle(
    ctx: &Ctx,
    target: &Target,
    dst: SocketAddr,
    proto: Protocol,
    req: Request<Incoming>,
) -> Response<Body> {
    let started = Instant::now();
    let (service, eps) = candidates(target, dst);
    let grpc = super::is_grpc(&req);
    let (resp, used) = if eps.is_empty() {
        (
            error_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("{service} has no ready endpoints"),
            ),
            None,
        )
    } else if is_upgrade(&req) {
        let (w, port) = eps[0];
        match tunnel(ctx, w, port, req).await {
            Ok(r) => (r, Some(w)),
            Err(e) => (
                error_response(
                    StatusCode::BAD_GATEWAY,
                    &format!("upgrade to {}: {e}", w.address),
                ),
                Some(w),
            ),
        }
    } else {
        send(ctx, &eps, proto, req).await
    };
    let me = ctx.identity.id();
    let (principal, dst_principal) = (
        me.to_string(),
        used.as_ref()
            .and_then(|w| w.identity.as_ref())
            .map(ToString::to_string),
    );
    let code = resp.status().as_u16().to_string();
    let (dst_workload, dst_ns) = used
        .as_ref()
        .map(|w| (w.workload.as_str(), w.namespace.as_str()))
        .unwrap_or(("unknown", "unknown"));
    ctx.metrics.request(
        &RequestLabels([
            "source",
            &ctx.workload,
            me.namespace(),
            &principal,
            &service,
            dst_workload,
            dst_ns,
            dst_principal.as_deref().unwrap_or("unknown"),
            if grpc { "grpc" } else { "http" },
            &code,
            if resp.headers().contains_key(super::PROXY_ERROR) {
                "UF"
            } else {
                "-"
            },
            if dst_principal.is_some() {
                "mutual_tls"
            } else {
                "none"
            },
        ]),
        started.elapsed(),
    );
    resp
}

/// Sends to the first endpoint that can be reached.
async fn send<'a>(
    ctx: &Ctx,
    eps: &[(&'a Workload, u16)],
    proto: Protocol,
    req: Request<Incoming>,
) -> (Response<Body>, Option<&'a Workload>) {
    let mut last = String::new();
    for (w, port) in eps {
        let conn = match &w.identity {
            Some(id) => {
                let addr = SocketAddr::new(w.address, ports::MTLS);
                ctx.peers
                    .get(addr, || async move {
                        outbound::connect_mtls(ctx, addr, id, crate::transport::ALPN_H2).await
                    })
                    .await
            }
            None if proto == Protocol::Http2 => {
                let addr = SocketAddr::new(w.address, *port);
                ctx.direct_h2
                    .get(addr, || async move { outbound::connect_plain(addr).await })
                    .await
            }
            None => {
                let uri = match absolute(req.uri(), &format!("{}:{port}", w.address)) {
                    Ok(u) => u,
                    Err(e) => return (error_response(StatusCode::BAD_REQUEST, &e), None),
                };
                let mut req = req;
                *req.uri_mut() = uri;
                strip_hop_by_hop(req.headers_mut());
                return match ctx.http1.request(req.map(BodyExt::boxed)).await {
                    Ok(r) => (r.map(BodyExt::boxed), Some(*w)),
                    Err(e) => (
                        error_response(StatusCode::BAD_GATEWAY, &format!("{}: {e}", w.address)),
                        Some(*w),
                    ),
                };
            }
        };
        let mut sender = match conn {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(endpoint = %w.address, error = %e, "endpoint connect failed");
                last = format!("{}: {e}", w.address);
                continue;
            }
        };
        let req = match to_h2(req, *port, proto, w.identity.is_some()) {
            Ok(r) => r,
            Err(e) => return (error_response(StatusCode::BAD_REQUEST, &e), None),
        };
        return match sender.send_request(req).await {
            Ok(mut r) => {
                if proto == Protocol::Http1 {
                    *r.version_mut() = Version::HTTP_11;
                }
                (r.map(BodyExt::boxed), Some(*w))
            }
            Err(e) => (
                error_response(StatusCode::BAD_GATEWAY, &format!("{}: {e}", w.address)),
                Some(*w),
            ),
        };
    }
    (
        error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("no endpoint reachable ({last})"),
        ),
        None,
    )
}

/// An absolute URI with `authority` (the request's, or `fallback`).
fn absolute(uri: &Uri, fallback: &str) -> Result<Uri, String> {
    let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or(fallback);
    format!("http://{authority}{pq}")
        .parse()
        .map_err(|e| format!("bad request URI: {e}"))
}

/// The request as HTTP/2 to a peer proxy (or an HTTP/2 app).
fn to_h2(
    req: Request<Incoming>,
    port: u16,
    proto: Protocol,
    to_peer: bool,
) -> Result<Request<Body>, String> {
    let (mut parts, body) = req.into_parts();
    let host = parts
        .headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| "localhost".into());
    parts.uri = absolute(&parts.uri, &host)?;
    parts.version = Version::HTTP_2;
    strip_hop_by_hop(&mut parts.headers);
    if to_peer {
        parts.headers.insert(DST_PORT, HeaderValue::from(port));
        if proto == Protocol::Http1 {
            parts
                .headers
                .insert(ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
        }
    }
    Ok(Request::from_parts(parts, body.boxed()))
}

/// An upgrade on an opaque stream of its own; once both sides switched,
/// bytes are copied both ways.
async fn tunnel(
    ctx: &Ctx,
    w: &Workload,
    port: u16,
    mut req: Request<Incoming>,
) -> anyhow::Result<Response<Body>> {
    let client_side = hyper::upgrade::on(&mut req);
    let io: Box<dyn outbound::Io> = match &w.identity {
        Some(id) => {
            let mut tls = outbound::connect_mtls(
                ctx,
                SocketAddr::new(w.address, ports::MTLS),
                id,
                crate::transport::ALPN_TCP,
            )
            .await?;
            tokio::io::AsyncWriteExt::write_all(&mut tls, &crate::transport::encode(port)).await?;
            Box::new(tls)
        }
        None => Box::new(outbound::connect_plain(SocketAddr::new(w.address, port)).await?),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    let mut resp = sender.send_request(req).await?;
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let server_side = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            if let (Ok(a), Ok(b)) = tokio::join!(client_side, server_side) {
                let _ =
                    tokio::io::copy_bidirectional(&mut TokioIo::new(a), &mut TokioIo::new(b)).await;
            }
        });
    }
    Ok(resp.map(BodyExt::boxed))
}
