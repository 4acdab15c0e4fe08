//! Inbound: mTLS from peer proxies on the mTLS port (the client's SPIFFE
//! ID verified, the target port read from the transport header), and
//! plaintext redirected from outside the mesh (accepted: permissive mode;
//! HTTP is parsed by the same inbound HTTP stack as mTLS requests). Both
//! are forwarded to the app on the pod's own address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use bytes::BytesMut;

use crate::detect::{self, Protocol};
use crate::metrics::ConnLabels;
use crate::prefixed::Prefixed;
use crate::{Ctx, orig_dst, ports, transport};

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the mTLS port.
pub async fn serve_mtls(listener: TcpListener, ctx: Arc<Ctx>) {
    let acceptor = TlsAcceptor::from(ctx.server_tls.clone());
    let drain = ctx.drain.clone();
    crate::accept::serve(listener, "inbound mTLS", drain, move |tcp| {
        let (ctx, acceptor) = (ctx.clone(), acceptor.clone());
        async move { handle_mtls(&ctx, acceptor, tcp).await }
    })
    .await;
}

async fn handle_mtls(ctx: &Arc<Ctx>, acceptor: TlsAcceptor, tcp: TcpStream) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let local = tcp.local_addr()?;
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| anyhow::anyhow!("TLS handshake timed out"))??;
    let peer = common::tls::peer_identity(tls.get_ref().1.peer_certificates())
        .ok_or_else(|| anyhow::anyhow!("peer has no SPIFFE identity"))?;
    if tls.get_ref().1.alpn_protocol() == Some(transport::ALPN_H2) {
        crate::http::inbound::serve(ctx.clone(), tls, peer, local.ip()).await;
        return Ok(());
    }
    let mut header = [0u8; transport::LEN];
    tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.read_exact(&mut header))
        .await
        .map_err(|_| anyhow::anyhow!("no transport header"))??;
    let port = transport::decode(&header)?;
    anyhow::ensure!(
        port != ports::MTLS && port != ports::INBOUND,
        "refusing a loop to port {port}"
    );
    let principal = peer.to_string();
    forward(
        ctx,
        tls,
        SocketAddr::new(local.ip(), port),
        peer.namespace(),
        &principal,
        true,
    )
    .await
}

/// Serves the plaintext inbound port: HTTP goes through the inbound HTTP
/// stack (parsed, limited, rate limited, counted) like mTLS requests do;
/// anything else is forwarded as bytes.
pub async fn serve_plain(listener: TcpListener, ctx: Arc<Ctx>) {
    let drain = ctx.drain.clone();
    crate::accept::serve(listener, "inbound", drain, move |mut tcp| {
        let ctx = ctx.clone();
        async move {
            tcp.set_nodelay(true)?;
            let dst = orig_dst::original_dst(&tcp)?;
            anyhow::ensure!(
                dst.port() != ports::INBOUND,
                "connection to the inbound port itself"
            );
            let mut buf = BytesMut::new();
            let proto = if ctx.opaque_ports.contains(&dst.port()) {
                Protocol::Opaque
            } else {
                detect::detect(&mut tcp, &mut buf, ctx.detect_timeout, false).await
            };
            let io = Prefixed::new(buf.freeze(), tcp);
            if proto == Protocol::Opaque {
                forward(&ctx, io, dst, "unknown", "unknown", false).await
            } else {
                crate::http::inbound::serve_plain(ctx, io, dst, proto).await;
                Ok(())
            }
        }
    })
    .await;
}

async fn forward<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &Ctx,
    mut downstream: S,
    app_addr: SocketAddr,
    source_ns: &str,
    source_principal: &str,
    mtls: bool,
) -> anyhow::Result<()> {
    let mut app = TcpStream::connect(app_addr).await?;
    app.set_nodelay(true)?;
    let me = ctx.identity.id();
    let principal = me.to_string();
    let service = app_addr.to_string();
    let labels = ConnLabels([
        "destination",
        "unknown",
        source_ns,
        source_principal,
        &service,
        &ctx.workload,
        me.namespace(),
        &principal,
        if mtls { "mutual_tls" } else { "none" },
    ]);
    ctx.metrics.opened(&labels);
    let result = tokio::io::copy_bidirectional(&mut downstream, &mut app).await;
    let (received, sent) = result.as_ref().map(|(a, b)| (*a, *b)).unwrap_or((0, 0));
    ctx.metrics.closed(&labels, sent, received);
    result?;
    Ok(())
}
