//! Connections to the controller: gRPC over our own TLS, checking that the
//! server is the controller's SPIFFE identity.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::spiffe::SpiffeId;
use common::tls::Identity;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint};

/// Where the controller is and who it must be.
#[derive(Clone, Debug)]
pub struct ControllerAddr {
    /// Its address, `host:port`: an IP or a name resolved on each
    /// connect (on Kubernetes, the controller's Service).
    pub addr: String,
    /// Its SPIFFE ID.
    pub identity: SpiffeId,
}

/// Checks a `host:port` address for the controller.
pub fn parse_addr(s: &str) -> Result<String, String> {
    if s.parse::<SocketAddr>().is_ok() {
        return Ok(s.to_string());
    }
    match s.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {
            Ok(s.to_string())
        }
        _ => Err(format!(
            "{s:?} is not host:port, e.g. mesh-controller.mesh-system.svc:15012"
        )),
    }
}

/// A TCP connection to `addr` (`host:port`), names resolved.
async fn connect(addr: &str) -> std::io::Result<tokio::net::TcpStream> {
    let tcp = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connect to controller timed out",
            )
        })??;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// A channel that connects (lazily) over mTLS when we have a certificate,
/// server-authenticated TLS before.
pub fn channel(ctl: &ControllerAddr, ident: &Arc<Identity>) -> anyhow::Result<Channel> {
    let config = ident.client_config(&[b"h2"])?;
    let ctl = ctl.clone();
    let connector = tower::service_fn(move |_uri| {
        let config = config.clone();
        let ctl = ctl.clone();
        async move {
            let tcp = connect(&ctl.addr).await?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(common::tls::server_name(&ctl.identity), tcp)
                .await?;
            let peer = common::tls::peer_identity(tls.get_ref().1.peer_certificates());
            if peer.as_ref() != Some(&ctl.identity) {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::PermissionDenied,
                    format!("controller presented {peer:?}, expected {}", ctl.identity),
                ));
            }
            Ok::<_, std::io::Error>(TokioIo::new(tls))
        }
    });
    Ok(Endpoint::from_static("http://mesh-controller")
        .connect_timeout(Duration::from_secs(5))
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(connector))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_ips_or_names_with_a_port() {
        for ok in [
            "10.244.0.1:15012",
            "mesh-controller.mesh-system.svc:15012",
            "[::1]:15012",
        ] {
            assert_eq!(parse_addr(ok).as_deref(), Ok(ok));
        }
        for bad in ["mesh-controller", ":15012", "host:0", "host:http"] {
            assert!(parse_addr(bad).unwrap_err().contains("host:port"), "{bad}");
        }
    }

    #[tokio::test]
    async fn names_are_resolved_when_connecting() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        let tcp = connect(&format!("localhost:{port}")).await.unwrap();
        assert_eq!(tcp.peer_addr().unwrap().port(), port);
    }
}
