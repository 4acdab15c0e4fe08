//! The HTTP servers' limits, as Envoy sets them for Istio: request headers
//! up to 60 KiB and 100 fields (431 beyond), a bounded wait for a
//! request's headers, and malformed requests refused (400) by the parser
//! rather than passed on. (A request framed by both Content-Length and
//! Transfer-Encoding is read as chunked and its connection closed after
//! the answer, as RFC 9112 6.1 says; Envoy answers 400.) Between proxies
//! the limits are higher than at the edge, so that whatever one proxy
//! accepts the next one carries.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioTimer};

/// Envoy's `max_request_headers_kb` default: 60 KiB of request line and
/// headers.
pub const MAX_HEADER_BYTES: usize = 60 * 1024;
/// Envoy's `max_headers_count` default.
pub const MAX_HEADERS: usize = 100;
/// How long a client may take to send a request's headers.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The header list a proxy accepts from a peer proxy: the edge's limit,
/// plus HTTP/2's per-field overhead and the headers proxies add.
pub const PEER_MAX_HEADER_LIST: u32 = 128 * 1024;

/// The HTTP/1 server for apps and clients outside the mesh.
pub fn h1_server() -> hyper::server::conn::http1::Builder {
    let mut b = hyper::server::conn::http1::Builder::new();
    b.max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    b
}

/// The HTTP/2 server for apps and clients outside the mesh.
pub fn h2_server() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.max_header_list_size(MAX_HEADER_BYTES as u32);
    b
}

/// The HTTP/2 server for peer proxies.
pub fn peer_h2_server() -> hyper::server::conn::http2::Builder<TokioExecutor> {
    let mut b = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    b.max_header_list_size(PEER_MAX_HEADER_LIST);
    b
}

/// Serves an app's or outsider's connection in `proto` (HTTP/2, else
/// HTTP/1 with upgrades) with the limits above, until it ends or the drain
/// has let it finish.
pub async fn serve<IO, S>(
    io: IO,
    svc: S,
    proto: crate::detect::Protocol,
    drain: &crate::drain::Watch,
) -> Result<(), hyper::Error>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::HttpService<hyper::body::Incoming, ResBody = super::Body>,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let io = hyper_util::rt::TokioIo::new(io);
    match proto {
        crate::detect::Protocol::Http2 => {
            crate::drain::serve(h2_server().serve_connection(io, svc), drain).await
        }
        _ => {
            let conn = h1_server().serve_connection(io, svc).with_upgrades();
            crate::drain::serve(conn, drain).await
        }
    }
}
