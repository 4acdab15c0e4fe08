//! Protocol detection: peek (without consuming) at what the client sends
//! first. The HTTP/2 preface means HTTP/2; a request line ending in
//! `HTTP/1.x` means HTTP/1; anything else, or nothing within the bounded
//! wait (a server-speaks-first protocol), is opaque TCP.

use std::time::Duration;

use tokio::net::TcpStream;

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
/// A request line longer than this is not taken for HTTP.
const MAX_REQUEST_LINE: usize = 8192;

/// Classifies the first bytes; `None` while more are needed.
pub fn classify(buf: &[u8]) -> Option<Protocol> {
    if buf.is_empty() {
        return None;
    }
    let n = buf.len().min(H2_PREFACE.len());
    if buf[..n] == H2_PREFACE[..n] {
        return (buf.len() >= H2_PREFACE.len()).then_some(Protocol::Http2);
    }
    // Method: a token of uppercase letters (RFC 9110 methods in use are).
    let method_len = buf.iter().take_while(|b| b.is_ascii_uppercase()).count();
    if method_len == buf.len() {
        return (method_len > 20).then_some(Protocol::Opaque);
    }
    if method_len == 0 || method_len > 20 || buf[method_len] != b' ' {
        return Some(Protocol::Opaque);
    }
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            let line = &buf[..end];
            let http1 = line.ends_with(b" HTTP/1.1") || line.ends_with(b" HTTP/1.0");
            Some(if http1 {
                Protocol::Http1
            } else {
                Protocol::Opaque
            })
        }
        None if buf.len() >= MAX_REQUEST_LINE => Some(Protocol::Opaque),
        None => None,
    }
}

/// Peeks at `tcp` until [`classify`] decides or `timeout` passes.
pub async fn detect(tcp: &TcpStream, timeout: Duration) -> Protocol {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; MAX_REQUEST_LINE];
    let mut seen = 0;
    loop {
        let peeked = tokio::time::timeout_at(deadline, tcp.peek(&mut buf)).await;
        let n = match peeked {
            Ok(Ok(n)) => n,
            // Nothing sent in time, or an error: not ours to parse.
            _ => return Protocol::Opaque,
        };
        if n == 0 {
            return Protocol::Opaque;
        }
        if let Some(p) = classify(&buf[..n]) {
            return p;
        }
        if n == seen || n == buf.len() {
            // The same bytes again: wait a little for more.
            if tokio::time::Instant::now() >= deadline {
                return Protocol::Opaque;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        seen = n;
    }
}

/// The SNI of a TLS ClientHello the client is sending, read without
/// consuming it, waiting at most `timeout` for it to arrive whole.
pub async fn peek_sni(tcp: &TcpStream, timeout: Duration) -> Option<String> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut buf = vec![0u8; 16 * 1024];
    let mut seen = 0;
    loop {
        let n = tokio::time::timeout_at(deadline, tcp.peek(&mut buf))
            .await
            .ok()?
            .ok()?;
        if n == 0 {
            return None;
        }
        if let Some(name) = crate::traffic::l4::sni(&buf[..n]) {
            return Some(name);
        }
        // Not a TLS record at all: no point in waiting.
        if buf[0] != 0x16 || n == buf.len() {
            return None;
        }
        if n == seen {
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        seen = n;
    }
}

#[cfg(test)]
mod tests {
    use super::Protocol::*;
    use super::*;

    #[test]
    fn http1_request_lines() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"), Some(Http1));
        assert_eq!(classify(b"POST /x?y=1 HTTP/1.0\r\n"), Some(Http1));
        assert_eq!(classify(b"GET / HTTP/1.1"), None);
        assert_eq!(classify(b"GE"), None);
        assert_eq!(classify(b"GET /"), None);
    }

    #[test]
    fn h2_preface_whole_or_partial() {
        assert_eq!(classify(H2_PREFACE), Some(Http2));
        assert_eq!(classify(b"PRI * HTTP/2.0\r\n"), None);
        let mut with_frames = H2_PREFACE.to_vec();
        with_frames.extend_from_slice(&[0, 0, 0, 4]);
        assert_eq!(classify(&with_frames), Some(Http2));
    }

    #[test]
    fn everything_else_is_opaque() {
        // TLS ClientHello, redis RESP, postgres startup, lowercase junk.
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02]), Some(Opaque));
        assert_eq!(classify(b"*1\r\n$4\r\nPING\r\n"), Some(Opaque));
        assert_eq!(classify(&[0, 0, 0, 8, 4, 210, 22, 47]), Some(Opaque));
        assert_eq!(classify(b"get / HTTP/1.1\r\n"), Some(Opaque));
        assert_eq!(classify(b"GET / SPDY/3\r\n"), Some(Opaque));
        assert_eq!(classify(b"HELLOWORLDHELLOWORLDX"), Some(Opaque));
        assert_eq!(
            classify(
                &[b'A'; MAX_REQUEST_LINE]
                    .iter()
                    .copied()
                    .chain(*b" x")
                    .collect::<Vec<_>>()
            ),
            Some(Opaque)
        );
    }

    #[tokio::test]
    async fn a_silent_client_is_opaque_after_the_wait() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (server, _) = l.accept().await.unwrap();
        let t = std::time::Instant::now();
        assert_eq!(detect(&server, Duration::from_millis(50)).await, Opaque);
        assert!(t.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test]
    async fn detection_does_not_consume_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = tokio::net::TcpStream::connect(l.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = l.accept().await.unwrap();
        client.write_all(b"GET /a HTTP/1.1\r\n").await.unwrap();
        assert_eq!(detect(&server, Duration::from_secs(1)).await, Http1);
        let mut buf = [0u8; 6];
        server.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"GET /a");
    }
}
