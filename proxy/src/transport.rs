//! The header an outbound proxy writes first on an mTLS connection to a
//! peer proxy, saying which port of the peer's pod the stream is for
//! (the original destination port after Service translation).
//!
//! Layout: `MSH1` then the port as u16 big-endian. Other ALPN protocols on
//! the mTLS port (HTTP/2 between proxies) come with later versions.

/// ALPN of an opaque TCP stream carrying this header.
pub const ALPN_TCP: &[u8] = b"mesh-tcp/1";
/// ALPN of the HTTP/2 connection that carries a peer's HTTP requests.
pub const ALPN_H2: &[u8] = b"h2";

const MAGIC: &[u8; 4] = b"MSH1";

/// Length of an encoded header.
pub const LEN: usize = 6;

/// Encodes a header for `port`.
pub fn encode(port: u16) -> [u8; LEN] {
    let p = port.to_be_bytes();
    [MAGIC[0], MAGIC[1], MAGIC[2], MAGIC[3], p[0], p[1]]
}

/// Why a header is unusable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HeaderError {
    /// Not our magic.
    #[error("not a mesh transport header")]
    Magic,
    /// Port 0.
    #[error("port 0 in transport header")]
    Port,
}

/// Decodes a header.
pub fn decode(buf: &[u8; LEN]) -> Result<u16, HeaderError> {
    if &buf[..4] != MAGIC {
        return Err(HeaderError::Magic);
    }
    match u16::from_be_bytes([buf[4], buf[5]]) {
        0 => Err(HeaderError::Port),
        p => Ok(p),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        assert_eq!(decode(&encode(5432)), Ok(5432));
        assert_eq!(decode(&encode(0)), Err(HeaderError::Port));
        assert_eq!(decode(b"GET / "), Err(HeaderError::Magic));
    }
}
