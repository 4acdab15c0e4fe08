//! Protocol detection: read what the client sends first into a buffer
//! (handed on with the connection, see [`crate::prefixed`]), without
//! polling: each read waits for new bytes. The HTTP/2 preface means
//! HTTP/2; a request line means HTTP/1; anything else, or nothing within
//! the bounded wait (a server-speaks-first protocol), is opaque TCP.
//!
//! What looks like HTTP is parsed as HTTP even when it is malformed (an
//! unknown version, a request line that is too long or held back), so
//! that the HTTP server answers it (400, 408, 414, 431) instead of it
//! slipping through as opaque bytes. On a port declared HTTP nothing is
//! ever opaque.

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

/// What a connection carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.0 or 1.1.
    Http1,
    /// HTTP/2 with prior knowledge (gRPC included).
    Http2,
    /// Anything else: bytes are forwarded untouched.
    Opaque,
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
/// Bytes read to decide; a request line this long is handed to the HTTP
/// server, which refuses it (414).
pub const MAX_REQUEST_LINE: usize = 8192;
/// The longest method token taken for HTTP.
const MAX_METHOD: usize = 20;

/// Classifies the first bytes; `None` while more are needed. On a port
/// declared HTTP (`declared`), whatever is not HTTP/2 is HTTP/1.
pub fn classify(buf: &[u8], declared: bool) -> Option<Protocol> {
    if buf.is_empty() {
        return None;
    }
    let other = if declared {
        Protocol::Http1
    } else {
        Protocol::Opaque
    };
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (buf.len() >= H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    // Method: a token of uppercase letters (RFC 9110 methods in use are).
    let method_len = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method_len == buf.len() {
        return (method_len > MAX_METHOD).then_some(other);
    }
    if method_len == 0 || method_len > MAX_METHOD || buf[method_len] != b' ' {
        return Some(other);
    }
    match buf.iter().position(|b| *b == b'\n') {
        // A request line; its version is the HTTP server's to judge.
        Some(end) if buf[..end].windows(6).any(|w| w == b" HTTP/") => Some(Protocol::Http1),
        // `GET /path` alone is HTTP/0.9, never served: the HTTP server
        // refuses it. (A redis inline `GET key` is not a path.)
        Some(_) if buf[method_len + 1] == b'/' => Some(Protocol::Http1),
        Some(_) => Some(other),
        None if buf.len() >= MAX_REQUEST_LINE => Some(Protocol::Http1),
        None => None,
    }
}

/// The decision when no more bytes come (the wait ran out, or the client
/// closed): a request line begun is HTTP (the HTTP server times it out),
/// silence is opaque (a server-speaks-first protocol).
pub fn settle(buf: &[u8], declared: bool) -> Protocol {
    if let Some(p) = classify(buf, declared) {
        return p;
    }
    if buf.is_empty() {
        return Protocol::Opaque;
    }
    let method_len = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if declared || (method_len > 0 && buf.get(method_len) == Some(&b' ')) {
        Protocol::Http1
    } else {
        Protocol::Opaque
    }
}

/// Reads from `io` into `buf` until [`classify`] decides, the client stops
/// sending, or `timeout` passes.
pub async fn detect<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    timeout: Duration,
    declared: bool,
) -> Protocol {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(p) = classify(buf, declared) {
            return p;
        }
        // Full, closed, failed or silent: decide on what there is.
        if !read_more(io, buf, MAX_REQUEST_LINE, deadline).await {
            return settle(buf, declared);
        }
    }
}

/// Reads what the client sends next into `buf`, keeping it at most `max`
/// bytes; false when `buf` is full, the client closed or failed, or
/// nothing came before `deadline`.
async fn read_more<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    max: usize,
    deadline: tokio::time::Instant,
) -> bool {
    let room = max.saturating_sub(buf.len());
    if room == 0 {
        return false;
    }
    buf.reserve(room);
    let mut limited = (&mut *buf).limit(room);
    matches!(
        tokio::time::timeout_at(deadline, io.read_buf(&mut limited)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// The SNI of a TLS ClientHello the client is sending, read into `buf`,
/// waiting at most `timeout` for it to arrive whole.
pub async fn sni<S: AsyncRead + Unpin>(
    io: &mut S,
    buf: &mut BytesMut,
    timeout: Duration,
) -> Option<String> {
    const MAX_HELLO: usize = 16 * 1024;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if !buf.is_empty() {
            if let Some(name) = crate::traffic::l4::sni(buf) {
                return Some(name);
            }
            // Not a TLS record at all: no point in waiting.
            if buf[0] != 0x16 {
                return None;
            }
        }
        if !read_more(io, buf, MAX_HELLO, deadline).await {
            return None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Protocol::*;
    use super::*;

    #[test]
    fn http1_request_lines() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", false),
            Some(Http1)
        );
        assert_eq!(classify(b"POST /x?y=1 HTTP/1.0\r\n", false), Some(Http1));
        assert_eq!(classify(b"GET / HTTP/1.1", false), None);
        assert_eq!(classify(b"GE", false), None);
        assert_eq!(classify(b"GET /", false), None);
    }

    #[test]
    fn h2_preface_whole_or_partial() {
        assert_eq!(classify(H2_PREFACE, false), Some(Http2));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n", false), None);
        let mut with_frames = H2_PREFACE.to_vec();
        with_frames.extend_from_slice(&[0, 0, 0, 4]);
        assert_eq!(classify(&with_frames, false), Some(Http2));
    }

    #[test]
    fn everything_else_is_opaque_on_undeclared_ports() {
        // TLS ClientHello, redis RESP, postgres startup, lowercase junk.
        for bytes in [
            &[0x16, 0x03, 0x01, 0x02][..],
            b"*1\r\n$4\r\nPING\r\n",
            &[0, 0, 0, 8, 4, 210, 22, 47],
            b"get / HTTP/1.1\r\n",
            b"SET key value\r\n",
            b"HELLOWORLDHELLOWORLDX",
        ] {
            assert_eq!(classify(bytes, false), Some(Opaque), "{bytes:?}");
            assert_eq!(settle(bytes, false), Opaque, "{bytes:?}");
        }
        assert_eq!(settle(b"", false), Opaque);
        assert_eq!(settle(b"", true), Opaque);
    }

    #[test]
    fn what_looks_like_http_is_http_even_when_malformed() {
        // Any version: the HTTP server answers 400 or 505.
        assert_eq!(classify(b"GET / HTTP/9.9\r\n", false), Some(Http1));
        assert_eq!(classify(b"GET / SPDY/3\r\n", false), Some(Http1));
        // An endless request line: 414 from the HTTP server.
        let long: Vec<u8> = b"GET /"
            .iter()
            .copied()
            .chain(std::iter::repeat_n(b'a', MAX_REQUEST_LINE))
            .collect();
        assert_eq!(classify(&long, false), Some(Http1));
        // A request line held back past the wait: the server times it out.
        assert_eq!(settle(b"GET /slow", false), Http1);
    }

    #[test]
    fn a_declared_http_port_is_never_opaque() {
        for bytes in [
            &b"GET /\r\n"[..],
            b"GET / SPDY/3\r\n",
            b"\x16\x03\x01",
            b"get / HTTP/1.1\r\n",
        ] {
            assert_eq!(settle(bytes, true), Http1, "{bytes:?}");
        }
        // HTTP/0.9 is refused everywhere; a redis inline command is not it.
        assert_eq!(classify(b"GET /\r\n", false), Some(Http1));
        assert_eq!(classify(b"GET key\r\n", false), Some(Opaque));
    }

    #[tokio::test]
    async fn a_silent_client_is_opaque_after_the_wait() {
        let (_client, mut server) = tokio::io::duplex(64);
        let t = std::time::Instant::now();
        let mut buf = BytesMut::new();
        assert_eq!(
            detect(&mut server, &mut buf, Duration::from_millis(50), false).await,
            Opaque
        );
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn detection_keeps_the_bytes_it_read() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET /a HTTP/1.1\r\n").await.unwrap();
        let mut buf = BytesMut::new();
        assert_eq!(
            detect(&mut server, &mut buf, Duration::from_secs(1), false).await,
            Http1
        );
        assert_eq!(&buf[..], b"GET /a HTTP/1.1\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickled_request_line_is_read_as_it_comes() {
        use tokio::io::AsyncWriteExt;
        let (mut client, mut server) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            for b in b"GET / HTTP/1.1\r\n" {
                client.write_all(&[*b]).await.unwrap();
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            client
        });
        let mut buf = BytesMut::new();
        assert_eq!(
            detect(&mut server, &mut buf, Duration::from_secs(1), false).await,
            Http1
        );
        drop(writer.await.unwrap());
    }
}
