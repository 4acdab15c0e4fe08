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
    /// Its address.
    pub addr: SocketAddr,
    /// Its SPIFFE ID.
    pub identity: SpiffeId,
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
            let tcp = tokio::time::timeout(
                Duration::from_secs(5),
                tokio::net::TcpStream::connect(ctl.addr),
            )
            .await
            .map_err(|_| {
                std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connect to controller timed out",
                )
            })??;
            tcp.set_nodelay(true)?;
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
