//! How the proxy reaches upstreams: plain TCP, mTLS to a peer proxy whose
//! SPIFFE ID must be the one discovery named, and the pools that keep
//! those connections (one multiplexed HTTP/2 connection per peer proxy or
//! HTTP/2 app, keep-alive HTTP/1.1 to apps).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use api::spiffe::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::http::pool::H2Pool;
use crate::{http, transport};

/// A byte stream to an upstream.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Keep-alive HTTP/1.1 to apps and unmeshed endpoints.
pub type Http1Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http::Body,
>;

/// The client side of every upstream connection.
pub struct Upstreams {
    tls: Arc<rustls::ClientConfig>,
    tls_h2: Arc<rustls::ClientConfig>,
    /// One multiplexed HTTP/2 mTLS connection per peer proxy.
    pub peers: H2Pool<SocketAddr>,
    /// HTTP/2 to apps and unmeshed endpoints, one connection per address.
    pub direct_h2: H2Pool<SocketAddr>,
    /// HTTP/1.1 to apps and unmeshed endpoints, pooled keep-alive.
    pub http1: Http1Client,
}

impl Upstreams {
    /// Client connections as `ident`.
    pub fn new(ident: &Arc<common::tls::Identity>) -> anyhow::Result<Self> {
        Ok(Self {
            tls: ident.client_config(&[transport::ALPN_TCP])?,
            tls_h2: ident.client_config(&[transport::ALPN_H2])?,
            peers: H2Pool::default(),
            direct_h2: H2Pool::default(),
            http1: http1_client(),
        })
    }

    /// Drops pooled connections idle past their `idleTimeout`.
    pub fn reap(&self) {
        self.peers.reap();
        self.direct_h2.reap();
    }

    /// mTLS to a peer proxy with `alpn`, checking that it is `expected`.
    pub async fn mtls(
        &self,
        addr: SocketAddr,
        expected: &SpiffeId,
        alpn: &[u8],
        timeout: Duration,
    ) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = plain(addr, timeout).await?;
        let config = if alpn == transport::ALPN_H2 {
            &self.tls_h2
        } else {
            &self.tls
        };
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let tls = tokio::time::timeout(
            timeout,
            connector.connect(common::tls::server_name(expected), tcp),
        )
        .await
        .map_err(|_| anyhow::anyhow!("TLS handshake with {addr} timed out"))??;
        let peer = common::tls::peer_identity(tls.get_ref().1.peer_certificates());
        if peer.as_ref() != Some(expected) {
            anyhow::bail!(
                "peer {addr} presented {}, expected {expected}",
                peer.map(|p| p.to_string())
                    .unwrap_or_else(|| "no identity".into())
            );
        }
        Ok(tls)
    }
}

/// A plain TCP connection, bounded in time.
pub async fn plain(addr: SocketAddr, timeout: Duration) -> anyhow::Result<TcpStream> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connect to {addr} timed out"))??;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

fn http1_client() -> Http1Client {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(3)));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}
