//! The bottom of the try stack: one try of one request to the picked
//! endpoint. To a meshed endpoint over the peer proxy's shared HTTP/2
//! mTLS connection (the app port and the client app's protocol ride in
//! headers); to an unmeshed one directly in the app's protocol. An
//! upgrade goes on an opaque stream of its own. Failures say whether the
//! request left (a connect failure gives it back, so that a retry can
//! send it unchanged).

use std::net::SocketAddr;
use std::sync::Arc;

use crate::http::service_head;
use api::discovery::Workload;
use api::spiffe::SpiffeId;
use http_body_util::BodyExt;
use hyper::header::{HOST, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Request, Response, Uri, Version};
use tower::Service;

use super::{Failure, Picked};
use crate::connect::{Io, Upstreams, plain};
use crate::detect::Protocol;
use crate::http::{
    Body, DST_PORT, ORIG_PROTO, PEER, SERVICE, is_upgrade, strip_hop_by_hop, strip_internal,
};
use crate::traffic::limits::ConnSettings;
use crate::traffic::upstream_tls::{Origination, UpstreamTls};
use crate::{ports, transport};

/// The connecting service.
#[derive(Clone)]
pub(crate) struct Connect {
    upstreams: Arc<Upstreams>,
    proto: Protocol,
}

impl Connect {
    /// Sends requests of `proto` through `upstreams`.
    pub fn new(upstreams: Arc<Upstreams>, proto: Protocol) -> Self {
        Self { upstreams, proto }
    }
}

impl Service<Request<Body>> for Connect {
    service_head!(Failure);

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let (upstreams, proto) = (self.upstreams.clone(), self.proto);
        Box::pin(async move {
            let Some(picked) = req.extensions().get::<Picked>().cloned() else {
                return Err(Failure::NoEndpoint("no endpoint picked".into()));
            };
            let w = picked.workload();
            let identity = match picked.tls.mesh_identity(w) {
                Ok(id) => id,
                Err(e) => return Err(Failure::Connect(Some(Box::new(req)), e)),
            };
            let to = To {
                w,
                identity,
                port: picked.port,
                tls: &picked.tls,
            };
            if is_upgrade(&req) {
                return tunnel(&upstreams, &to, req)
                    .await
                    .map_err(|e| Failure::Connect(None, e.to_string()));
            }
            if let UpstreamTls::Originate(o) = &picked.tls {
                return originate(o, &to, req).await;
            }
            attempt(&upstreams, &to, proto, &picked.conn, req).await
        })
    }
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

/// Where a try goes.
struct To<'a> {
    /// The endpoint.
    w: &'a Workload,
    /// The identity its proxy is dialed with over mesh mTLS (`None`: not
    /// over mesh mTLS).
    identity: Option<&'a SpiffeId>,
    /// The port on it.
    port: u16,
    /// `trafficPolicy.tls`.
    tls: &'a UpstreamTls,
}

/// Sends `req` over TLS originated to the endpoint's own port (HTTP/1.1,
/// pooled keep-alive).
async fn originate(
    o: &Origination,
    to: &To<'_>,
    mut req: Request<Body>,
) -> Result<Response<Body>, Failure> {
    strip_internal(req.headers_mut());
    let addr = SocketAddr::new(to.w.address, to.port);
    let uri = std::mem::take(req.uri_mut());
    let endpoint = Authority::try_from(addr.to_string()).ok();
    *req.uri_mut() = absolute(uri, Scheme::HTTPS, endpoint, || None).map_err(Failure::Reset)?;
    *req.version_mut() = Version::HTTP_11;
    strip_hop_by_hop(req.headers_mut());
    match o.http1.request(req).await {
        Ok(r) => Ok(r.map(BodyExt::boxed)),
        Err(e) if e.is_connect() => {
            let why = std::error::Error::source(&e).map_or(e.to_string(), ToString::to_string);
            tracing::warn!(endpoint = %addr, error = %why, "TLS origination failed");
            Err(Failure::Connect(None, why))
        }
        Err(e) => Err(Failure::Reset(e.to_string())),
    }
}

/// Sends `req` to `to`.
async fn attempt(
    upstreams: &Upstreams,
    to: &To<'_>,
    proto: Protocol,
    conn: &ConnSettings,
    req: Request<Body>,
) -> Result<Response<Body>, Failure> {
    let (w, port) = (to.w, to.port);
    let timeout = conn.connect_timeout;
    let conn = match to.identity {
        Some(id) => {
            let addr = SocketAddr::new(w.address, ports::MTLS);
            upstreams
                .peers
                .get(addr, conn, || async move {
                    upstreams.mtls(addr, id, transport::ALPN_H2, timeout).await
                })
                .await
        }
        None if proto == Protocol::Http2 => {
            let addr = SocketAddr::new(w.address, port);
            upstreams
                .direct_h2
                .get(addr, conn, || async move { plain(addr, timeout).await })
                .await
        }
        None => {
            let mut req = req;
            strip_internal(req.headers_mut());
            let fallback = || format!("{}:{port}", w.address).parse().ok();
            let uri = std::mem::take(req.uri_mut());
            *req.uri_mut() = absolute(uri, Scheme::HTTP, None, fallback).map_err(Failure::Reset)?;
            strip_hop_by_hop(req.headers_mut());
            return match upstreams.http1.request(req).await {
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
    let h2 = match to_h2(req, port, proto, to.identity.is_some()) {
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

/// `uri` as an absolute URI of `scheme`, with the authority `set`, else
/// its own, else `fallback`'s. The path is moved, not copied.
fn absolute(
    uri: Uri,
    scheme: Scheme,
    set: Option<Authority>,
    fallback: impl FnOnce() -> Option<Authority>,
) -> Result<Uri, String> {
    let mut parts = uri.into_parts();
    if set.is_some() {
        parts.authority = set;
    } else if parts.authority.is_none() {
        parts.authority = Some(fallback().ok_or("bad request authority")?);
    }
    parts.scheme = Some(scheme);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).map_err(|e| format!("bad request URI: {e}"))
}

/// The request as HTTP/2 to a peer proxy (or an HTTP/2 app).
fn to_h2(
    req: Request<Body>,
    port: u16,
    proto: Protocol,
    to_peer: bool,
) -> Result<Request<Body>, String> {
    let (mut parts, body) = req.into_parts();
    let headers = &parts.headers;
    let host = || match headers.get(HOST) {
        Some(h) => Authority::try_from(h.as_bytes()).ok(),
        None => Some(Authority::from_static("localhost")),
    };
    parts.uri = absolute(std::mem::take(&mut parts.uri), Scheme::HTTP, None, host)?;
    parts.version = Version::HTTP_2;
    strip_hop_by_hop(&mut parts.headers);
    if !to_peer {
        strip_internal(&mut parts.headers);
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
async fn tunnel(
    upstreams: &Upstreams,
    to: &To<'_>,
    mut req: Request<Body>,
) -> anyhow::Result<Response<Body>> {
    let (w, port) = (to.w, to.port);
    // The stream's transport header tells the peer what the headers
    // would have.
    let told = [PEER, SERVICE]
        .iter()
        .filter_map(|h| req.headers().get(h)?.to_str().ok())
        .collect::<Vec<_>>()
        .join(",");
    strip_internal(req.headers_mut());
    let timeout = crate::traffic::limits::CONNECT_TIMEOUT;
    let io: Box<dyn Io> = match (to.identity, to.tls) {
        (_, UpstreamTls::Originate(o)) => {
            Box::new(o.connect(SocketAddr::new(w.address, port), timeout).await?)
        }
        (Some(id), _) => {
            let addr = SocketAddr::new(w.address, ports::MTLS);
            let mut tls = upstreams
                .mtls(addr, id, transport::ALPN_TCP, timeout)
                .await?;
            tokio::io::AsyncWriteExt::write_all(&mut tls, &transport::encode(port, &told)).await?;
            Box::new(tls)
        }
        (None, _) => Box::new(plain(SocketAddr::new(w.address, port), timeout).await?),
    };
    crate::http::upgrade::tunnel_over(io, req).await
}
