//! What the outbound and inbound HTTP stacks share: the body type, the
//! headers that travel between proxies, the server limits ([`limits`]),
//! the connection pools ([`pool`]), body replay ([`replay`]), the stream
//! info layers note on responses ([`stream_info`]) and upgrades
//! ([`upgrade`]).
//!
//! Between proxies every request rides one multiplexed HTTP/2 mTLS
//! connection per peer; the receiving proxy speaks to its app in the
//! protocol the client app used, which travels in a header, as does the
//! target port. HTTP/1.1 upgrades (WebSocket) are tunnelled over an
//! opaque mTLS stream.

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{self, HeaderMap, HeaderName};
use hyper::{Response, StatusCode};

pub mod counted;
pub mod limits;
pub mod pool;
pub mod replay;
pub mod stream_info;
pub mod upgrade;

/// The body type on every path.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// A body of `bytes`, whole.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    use http_body_util::BodyExt;
    http_body_util::Full::new(bytes.into())
        .map_err(|n| match n {})
        .boxed()
}

/// A boxed response future, the shape every layer returns.
pub type ResponseFuture<E> =
    std::pin::Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

/// A stack (or the part of one below a layer) that always answers: what a
/// layer above the tries wraps.
pub trait Stack:
    tower::Service<
        hyper::Request<Body>,
        Response = Response<Body>,
        Error = std::convert::Infallible,
        Future: Send + 'static,
    > + Clone
    + Send
    + 'static
{
}

impl<S> Stack for S where
    S: tower::Service<
            hyper::Request<Body>,
            Response = Response<Body>,
            Error = std::convert::Infallible,
            Future: Send + 'static,
        > + Clone
        + Send
        + 'static
{
}

/// The head of a layer's `Service` impl: HTTP in and out, always ready
/// (nothing below holds back), a boxed future failing with `$err`.
macro_rules! service_head {
    ($err:ty) => {
        type Response = hyper::Response<$crate::http::Body>;
        type Error = $err;
        type Future = $crate::http::ResponseFuture<$err>;

        fn poll_ready(
            &mut self,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), $err>> {
            std::task::Poll::Ready(Ok(()))
        }
    };
}
pub(crate) use service_head;

/// The port on the destination pod a request is for (proxy to proxy).
pub const DST_PORT: HeaderName = HeaderName::from_static("x-mesh-dst-port");
/// Set when the client app spoke HTTP/1: the server proxy speaks HTTP/1 to
/// its app too.
pub const ORIG_PROTO: HeaderName = HeaderName::from_static("x-mesh-orig-proto");
/// The client's VirtualService route name (proxy to proxy), for the
/// server's per-route rate limits.
pub const ROUTE: HeaderName = HeaderName::from_static("x-mesh-route");
/// The client's workload ([`api::peer::Peer`]'s text), proxy to proxy,
/// for the server's metric labels.
pub const PEER: HeaderName = HeaderName::from_static("x-mesh-peer");
/// The service the client asked for ([`api::peer::ServiceRef`]'s text),
/// proxy to proxy, for the server's metric labels.
pub const SERVICE: HeaderName = HeaderName::from_static("x-mesh-service");

/// Removes what only a peer proxy is told (the route, the client's
/// workload and service), before a request leaves the mesh.
pub fn strip_internal(h: &mut hyper::HeaderMap) {
    h.remove(ROUTE);
    h.remove(PEER);
    h.remove(SERVICE);
}

/// The proxy's own error text on a response it made itself.
pub const PROXY_ERROR: HeaderName = HeaderName::from_static("x-mesh-error");

/// A response made by the proxy (no upstream answered).
pub fn error_response(status: StatusCode, message: &str) -> Response<Body> {
    let mut r = Response::new(
        Full::new(Bytes::from(format!("{message}\n")))
            .map_err(|n| match n {})
            .boxed(),
    );
    *r.status_mut() = status;
    if let Ok(v) = message.parse() {
        r.headers_mut().insert(PROXY_ERROR, v);
    }
    r
}

/// Whether a request is gRPC (Istio's `request_protocol="grpc"`).
pub fn is_grpc<B>(req: &hyper::Request<B>) -> bool {
    req.headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether a request asks to switch protocols (WebSocket and the like).
pub fn is_upgrade<B>(req: &hyper::Request<B>) -> bool {
    req.headers().contains_key(header::UPGRADE)
        && req
            .headers()
            .get(header::CONNECTION)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
            })
}

/// Removes connection-scoped headers (RFC 9110 7.6.1), which never cross
/// a hop, and those the `Connection` header names.
pub fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| t.trim().parse().ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        HeaderName::from_static("keep-alive"),
        HeaderName::from_static("proxy-connection"),
    ] {
        h.remove(n);
    }
    if h.get(header::TE).is_some_and(|v| v != "trailers") {
        h.remove(header::TE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_go() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-private".parse().unwrap());
        h.insert("x-private", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers".parse().unwrap());
        h.insert(header::HOST, "orders".parse().unwrap());
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort();
        assert_eq!(left, ["host", "te"]);
    }

    #[test]
    fn upgrade_needs_both_headers() {
        let req = |conn: &str| {
            hyper::Request::builder()
                .header(header::UPGRADE, "websocket")
                .header(header::CONNECTION, conn)
                .body(())
                .unwrap()
        };
        assert!(is_upgrade(&req("keep-alive, Upgrade")));
        assert!(!is_upgrade(&req("keep-alive")));
        assert!(!is_upgrade(&hyper::Request::new(())));
    }
}
