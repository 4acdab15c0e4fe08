//! The destination a redirected connection was addressed to
//! (`SO_ORIGINAL_DST`, set by the nat table's REDIRECT).

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use nix::sys::socket::{getsockopt, sockopt};
use tokio::net::TcpStream;

/// Reads the original destination of an accepted, redirected socket.
pub fn original_dst(stream: &TcpStream) -> std::io::Result<SocketAddr> {
    let sin = getsockopt(stream, sockopt::OriginalDst).map_err(std::io::Error::from)?;
    Ok(SocketAddr::V4(from_sockaddr_in(&sin)))
}

/// `sockaddr_in` holds address and port in network byte order.
fn from_sockaddr_in(sin: &nix::libc::sockaddr_in) -> SocketAddrV4 {
    SocketAddrV4::new(
        Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
        u16::from_be(sin.sin_port),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_byte_order() {
        let mut sin: nix::libc::sockaddr_in = blank();
        sin.sin_family = nix::libc::AF_INET as nix::libc::sa_family_t;
        sin.sin_port = 8080u16.to_be();
        sin.sin_addr.s_addr = u32::from(Ipv4Addr::new(10, 96, 0, 3)).to_be();
        assert_eq!(from_sockaddr_in(&sin), "10.96.0.3:8080".parse().unwrap());
    }

    fn blank() -> nix::libc::sockaddr_in {
        nix::libc::sockaddr_in {
            sin_family: 0,
            sin_port: 0,
            sin_addr: nix::libc::in_addr { s_addr: 0 },
            sin_zero: [0; 8],
        }
    }
}
