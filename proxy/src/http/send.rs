//! One try of one request to one endpoint: to a meshed endpoint over the
//! peer's shared HTTP/2 mTLS connection, to an unmeshed one directly in the
//! app's protocol. Failures say whether the request left (a connect failure
//! gives the request back, so that a retry can send it unchanged).

use std::net::SocketAddr;

use api::discovery::Workload;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HOST, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use super::{Body, DST_PORT, ORIG_PROTO, strip_hop_by_hop};
use crate::detect::Protocol;
use crate::traffic::limits::ConnSettings;
use crate::{Ctx, outbound, ports};

/// Why a try got no response.
#[derive(Debug)]
pub enum Failure {
    /// No connection; the request, when it was not consumed.
    Connect(Option<Box<Request<Body>>>, String),
    /// HTTP/2 REFUSED_STREAM: not processed.
    Refused(String),
    /// The stream or connection broke.
    Reset(String),
    /// The per-try timeout fired (set by the caller).
    Timeout,
}

fn refused(e: &hyper::Error) -> bool {
    let mut src: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = src {
        if s.to_string().contains("refused stream") || format!("{s:?}").contains("REFUSED_STREAM") {
            return true;
        }
        src = s.source();
    }
    false
}

/// Sends `req` to `w` (`port` on it).
pub async fn attempt(
    ctx: &Ctx,
    w: &Workload,
    port: u16,
    proto: Protocol,
    conn: &ConnSettings,
    req: Request<Body>,
) -> Result<Response<Body>, Failure> {
    let timeout = conn.connect_timeout;
    let conn = match &w.identity {
        Some(id) => {
            let addr = SocketAddr::new(w.address, ports::MTLS);
            ctx.peers
                .get(addr, conn, || async move {
                    outbound::connect_mtls(ctx, addr, id, crate::transport::ALPN_H2, timeout).await
                })
                .await
        }
        None if proto == Protocol::Http2 => {
            let addr = SocketAddr::new(w.address, port);
            ctx.direct_h2
                .get(addr, conn, || async move {
                    outbound::connect_plain(addr, timeout).await
                })
                .await
        }
        None => {
            let mut req = req;
            req.headers_mut().remove(super::ROUTE);
            let uri = match absolute(req.uri(), &format!("{}:{port}", w.address)) {
                Ok(u) => u,
                Err(e) => return Err(Failure::Reset(e)),
            };
            let mut req = req;
            *req.uri_mut() = uri;
            strip_hop_by_hop(req.headers_mut());
            return match ctx.http1.request(req).await {
                Ok(r) => Ok(r.map(BodyExt::boxed)),
                Err(e) if e.is_connect() => Err(Failure::Connect(None, e.to_string())),
                Err(e) => Err(Failure::Reset(e.to_string())),
            };
        }
    };
    let mut sender = match conn {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(endpoint = %w.address, error = %e, "endpoint connect failed");
            return Err(Failure::Connect(Some(Box::new(req)), e.to_string()));
        }
    };
    let version = req.version();
    let h2 = match to_h2(req, port, proto, w.identity.is_some()) {
        Ok(r) => r,
        Err(e) => return Err(Failure::Reset(e)),
    };
    match sender.try_send_request(h2).await {
        Ok(mut r) => {
            if proto == Protocol::Http1 {
                *r.version_mut() = Version::HTTP_11;
            }
            Ok(r.map(BodyExt::boxed))
        }
        Err(mut e) => match e.take_message() {
            // Never left: as good as a connect failure.
            Some(back) => Err(Failure::Connect(
                Some(Box::new(from_h2(back, version))),
                e.into_error().to_string(),
            )),
            None => {
                let e = e.into_error();
                if refused(&e) {
                    Err(Failure::Refused(e.to_string()))
                } else {
                    Err(Failure::Reset(e.to_string()))
                }
            }
        },
    }
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
    req: Request<Body>,
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
    if !to_peer {
        parts.headers.remove(super::ROUTE);
    }
    if to_peer {
        parts.headers.insert(DST_PORT, HeaderValue::from(port));
        if proto == Protocol::Http1 {
            parts
                .headers
                .insert(ORIG_PROTO, HeaderValue::from_static("HTTP/1.1"));
        }
    }
    Ok(Request::from_parts(parts, body))
}

/// Undoes [`to_h2`]'s peer headers on a request that never left.
fn from_h2(mut req: Request<Body>, version: Version) -> Request<Body> {
    *req.version_mut() = version;
    req.headers_mut().remove(DST_PORT);
    req.headers_mut().remove(ORIG_PROTO);
    req
}

/// An upgrade on an opaque stream of its own; once both sides switched,
/// bytes are copied both ways.
pub async fn tunnel(
    ctx: &Ctx,
    w: &Workload,
    port: u16,
    req: Request<Incoming>,
) -> anyhow::Result<Response<Body>> {
    let io: Box<dyn outbound::Io> = match &w.identity {
        Some(id) => {
            let mut tls = outbound::connect_mtls(
                ctx,
                SocketAddr::new(w.address, ports::MTLS),
                id,
                crate::transport::ALPN_TCP,
                crate::traffic::limits::CONNECT_TIMEOUT,
            )
            .await?;
            tokio::io::AsyncWriteExt::write_all(&mut tls, &crate::transport::encode(port)).await?;
            Box::new(tls)
        }
        None => Box::new(
            outbound::connect_plain(
                SocketAddr::new(w.address, port),
                crate::traffic::limits::CONNECT_TIMEOUT,
            )
            .await?,
        ),
    };
    tunnel_over(io, req).await
}

/// Sends the upgrade request `req` over `io`; once both sides switched,
/// copies bytes both ways.
pub async fn tunnel_over(
    io: Box<dyn outbound::Io>,
    mut req: Request<Incoming>,
) -> anyhow::Result<Response<Body>> {
    let client_side = hyper::upgrade::on(&mut req);
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
