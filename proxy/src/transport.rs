//! The header an outbound proxy writes first on an mTLS connection to a
//! peer proxy for an opaque stream, saying which port of the peer's pod
//! the stream is for (the original destination port after Service
//! translation) and, from `MSH2` on, who the client is
//! ([`api::peer::Peer`]'s text) for the peer's metric labels.
//!
//! Layout: `MSH1` then the port as u16 big-endian; or `MSH2`, the port,
//! the length of the peer text as u16 big-endian, and the text. HTTP/2
//! between proxies (ALPN `h2`) carries the same in request headers.

use tokio::io::{AsyncRead, AsyncReadExt};

/// ALPN of an opaque TCP stream carrying this header.
pub const ALPN_TCP: &[u8] = b"mesh-tcp/1";
/// ALPN of the HTTP/2 connection that carries a peer's HTTP requests.
pub const ALPN_H2: &[u8] = b"h2";

const MAGIC_V1: &[u8; 4] = b"MSH1";
const MAGIC_V2: &[u8; 4] = b"MSH2";

/// Length of the fixed part of a header.
pub const LEN: usize = 6;

/// The longest peer text read.
const MAX_PEER: usize = 1024;

/// Encodes a header for `port`, from the client `peer` (its text form).
pub fn encode(port: u16, peer: &str) -> Vec<u8> {
    let peer = &peer.as_bytes()[..peer.len().min(MAX_PEER)];
    let mut b = Vec::with_capacity(LEN + 2 + peer.len());
    b.extend_from_slice(MAGIC_V2);
    b.extend_from_slice(&port.to_be_bytes());
    b.extend_from_slice(&(peer.len() as u16).to_be_bytes());
    b.extend_from_slice(peer);
    b
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
    /// A peer text longer than allowed.
    #[error("peer metadata of {0} bytes in transport header")]
    Peer(usize),
}

/// Decodes the fixed part: the port, and whether the peer text follows.
pub fn decode(buf: &[u8; LEN]) -> Result<(u16, bool), HeaderError> {
    let v2 = match &buf[..4] {
        m if m == MAGIC_V1 => false,
        m if m == MAGIC_V2 => true,
        _ => return Err(HeaderError::Magic),
    };
    match u16::from_be_bytes([buf[4], buf[5]]) {
        0 => Err(HeaderError::Port),
        p => Ok((p, v2)),
    }
}

/// Reads a header from `io`: the port, and the client's peer text (empty
/// from an `MSH1` client).
pub async fn read<R: AsyncRead + Unpin>(io: &mut R) -> anyhow::Result<(u16, String)> {
    let mut fixed = [0u8; LEN];
    io.read_exact(&mut fixed).await?;
    let (port, v2) = decode(&fixed)?;
    if !v2 {
        return Ok((port, String::new()));
    }
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_PEER {
        return Err(HeaderError::Peer(len).into());
    }
    let mut peer = vec![0u8; len];
    io.read_exact(&mut peer).await?;
    Ok((port, String::from_utf8_lossy(&peer).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_rejects() {
        let b = encode(5432, "w=web,n=shop");
        assert_eq!(
            read(&mut &b[..]).await.unwrap(),
            (5432, "w=web,n=shop".to_string())
        );
        let v1 = b"MSH1\x15\x38";
        assert_eq!(read(&mut &v1[..]).await.unwrap(), (5432, String::new()));
        assert_eq!(
            decode(b"MSH2\0\0").unwrap_err(),
            HeaderError::Port,
            "port 0"
        );
        assert_eq!(decode(b"GET / ").unwrap_err(), HeaderError::Magic);
        let mut long = b"MSH2\x15\x38".to_vec();
        long.extend_from_slice(&5000u16.to_be_bytes());
        assert!(read(&mut &long[..]).await.is_err());
        // Cut short: an error, not a hang or a panic.
        assert!(read(&mut &b[..9]).await.is_err());
    }
}
