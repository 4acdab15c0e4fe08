//! Outbound: connections the app makes, redirected to us. A mesh Service
//! is balanced round robin over its ready endpoints; meshed endpoints are
//! reached over mTLS (their identity checked against discovery), others in
//! plaintext; addresses outside the mesh pass through unchanged.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use api::discovery::{Resolved, Workload};
use api::protocol::AppProtocol;
use api::spiffe::SpiffeId;
use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::detect::{self, Protocol};
use crate::discovery::{ATTEMPTS, Lookup, Target};
use crate::metrics::ConnLabels;
use crate::prefixed::Prefixed;
use crate::traffic::backend::Subset;
use crate::traffic::outlier::Observed;
use crate::{Ctx, orig_dst, ports, transport};

/// How long a connect to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Accepts redirected connections until the process ends.
pub async fn serve(listener: TcpListener, ctx: Arc<Ctx>) {
    let drain = ctx.drain.clone();
    crate::accept::serve(listener, "outbound", drain, move |tcp| {
        let ctx = ctx.clone();
        async move { handle(&ctx, tcp).await }
    })
    .await;
}

/// A connected upstream and what it is, for metrics.
struct Upstream {
    io: Box<dyn Io>,
    service: String,
    workload: String,
    namespace: String,
    principal: String,
    mtls: bool,
    /// Held while the connection lasts (`maxConnections`).
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// A byte stream to an upstream.
pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// How a connection to a mesh target is handled: a declared opaque port
/// skips detection, a declared HTTP port is parsed as what it proves to
/// be (never opaque), anything else is detected with a bounded wait
/// (well-known server-speaks-first ports excepted). What detection read
/// is in `buf`.
async fn protocol(
    ctx: &Ctx,
    app: &mut TcpStream,
    buf: &mut BytesMut,
    target: &Resolved,
    port: u16,
) -> anyhow::Result<Protocol> {
    let declared = match target {
        Resolved::Service(svc) => svc.port(port).map(|p| p.protocol).unwrap_or_default(),
        Resolved::Workload(_) => AppProtocol::Detect,
    };
    Ok(match declared {
        AppProtocol::Tcp => Protocol::Opaque,
        AppProtocol::Http | AppProtocol::Http2 | AppProtocol::Grpc => {
            match detect::detect(app, buf, DECLARED_HTTP_WAIT, true).await {
                Protocol::Opaque => {
                    // Nothing came: Envoy's request timeout.
                    let _ = app.write_all(REQUEST_TIMEOUT).await;
                    let _ = app.shutdown().await;
                    anyhow::bail!("no request within {DECLARED_HTTP_WAIT:?} on an HTTP port");
                }
                p => p,
            }
        }
        AppProtocol::Detect if ctx.opaque_ports.contains(&port) => Protocol::Opaque,
        AppProtocol::Detect => detect::detect(app, buf, ctx.detect_timeout, false).await,
    })
}

/// How long a port declared HTTP waits for the client's first bytes.
const DECLARED_HTTP_WAIT: Duration = Duration::from_secs(10);

const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

async fn handle(ctx: &Arc<Ctx>, mut app: TcpStream) -> anyhow::Result<()> {
    app.set_nodelay(true)?;
    let dst = orig_dst::original_dst(&app)?;
    if dst.port() == ports::OUTBOUND && dst.ip() == app.local_addr()?.ip() {
        anyhow::bail!("connection to the outbound port itself");
    }
    let client_ip = app.peer_addr()?.ip();
    let lookup = ctx.discovery.lookup(dst.ip()).await;
    let mut buf = BytesMut::new();
    if let Lookup::Mesh(target) = &lookup {
        let proto = protocol(ctx, &mut app, &mut buf, &target.resolved, dst.port()).await?;
        if proto != Protocol::Opaque {
            let app = Prefixed::new(buf.freeze(), app);
            crate::http::outbound::serve(ctx.clone(), app, client_ip, target.clone(), dst, proto)
                .await;
            return Ok(());
        }
    }
    if matches!(lookup, Lookup::Passthrough) && registry_only(ctx) {
        return blackhole(ctx, app, buf, dst).await;
    }
    let mut up = match lookup {
        Lookup::Passthrough => Upstream {
            io: Box::new(connect_plain(dst, CONNECT_TIMEOUT).await?),
            service: dst.ip().to_string(),
            workload: "unknown".into(),
            namespace: "unknown".into(),
            principal: "unknown".into(),
            mtls: false,
            permit: None,
        },
        Lookup::Mesh(target) => {
            l4_connect(ctx, &mut app, &mut buf, client_ip, &target, dst).await?
        }
    };
    let mut app = Prefixed::new(buf.freeze(), app);
    let me = ctx.identity.id();
    let principal = me.to_string();
    let labels = outbound_labels(
        ctx,
        me,
        &principal,
        [&up.service, &up.workload, &up.namespace, &up.principal],
        up.mtls,
    );
    ctx.metrics.opened(&labels);
    let result = tokio::io::copy_bidirectional(&mut app, &mut up.io).await;
    let (sent, received) = result.as_ref().map(|(a, b)| (*a, *b)).unwrap_or((0, 0));
    ctx.metrics.closed(&labels, sent, received);
    result?;
    Ok(())
}

/// A plain TCP connection, bounded in time.
pub(crate) async fn connect_plain(
    addr: SocketAddr,
    timeout: Duration,
) -> anyhow::Result<TcpStream> {
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| anyhow::anyhow!("connect to {addr} timed out"))??;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

/// Metric labels of a connection from this workload to `dst` (service,
/// workload, namespace, principal).
fn outbound_labels<'a>(
    ctx: &'a Ctx,
    me: &'a SpiffeId,
    principal: &'a str,
    dst: [&'a str; 4],
    mtls: bool,
) -> ConnLabels<'a> {
    ConnLabels([
        "source",
        &ctx.workload,
        me.namespace(),
        principal,
        dst[0],
        dst[1],
        dst[2],
        dst[3],
        if mtls { "mutual_tls" } else { "none" },
    ])
}

/// Counts a try's result for outlier detection; an ejection is logged
/// and counted.
pub(crate) fn observe(ctx: &Ctx, sub: &Subset, host: &str, ip: IpAddr, seen: Observed) {
    if sub.observe(ip, seen) {
        tracing::info!(%host, endpoint = %ip, "endpoint ejected");
        ctx.metrics.ejected(host);
    }
}

/// Whether this workload's Sidecar says `REGISTRY_ONLY`.
fn registry_only(ctx: &Ctx) -> bool {
    ctx.discovery
        .current(ctx.pod_ip)
        .is_some_and(|t| match &t.resolved {
            Resolved::Workload(w) => w
                .policy
                .as_ref()
                .is_some_and(|p| p.outbound() == api::proto::OutboundMode::RegistryOnly),
            Resolved::Service(_) => false,
        })
}

/// A destination outside the registry under `REGISTRY_ONLY`: Istio's
/// BlackHoleCluster. HTTP/1 gets a 502, anything else a closed connection.
async fn blackhole(
    ctx: &Ctx,
    mut app: TcpStream,
    mut buf: BytesMut,
    dst: SocketAddr,
) -> anyhow::Result<()> {
    let me = ctx.identity.id();
    let principal = me.to_string();
    let labels = outbound_labels(
        ctx,
        me,
        &principal,
        ["BlackHoleCluster", "unknown", "unknown", "unknown"],
        false,
    );
    ctx.metrics.opened(&labels);
    ctx.metrics.closed(&labels, 0, 0);
    if detect::detect(&mut app, &mut buf, ctx.detect_timeout, false).await == Protocol::Http1 {
        // Read the request first: unread bytes would turn the close into
        // a reset that can overtake the answer.
        let mut rest = vec![0u8; 16 * 1024];
        let _ = tokio::time::timeout(
            Duration::from_millis(100),
            tokio::io::AsyncReadExt::read(&mut app, &mut rest),
        )
        .await;
        app.write_all(
            b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nx-mesh-error: REGISTRY_ONLY\r\nconnection: close\r\n\r\n",
        )
        .await?;
        let _ = app.shutdown().await;
    }
    anyhow::bail!("{dst} is outside the registry (outboundTrafficPolicy REGISTRY_ONLY)")
}

/// An opaque connection to a mesh target, routed by its `tcp`/`tls`
/// routes and its DestinationRule (balancer, outlier detection,
/// `maxConnections`, `connectTimeout`), trying up to [`ATTEMPTS`]
/// endpoints.
async fn l4_connect(
    ctx: &Ctx,
    app: &mut TcpStream,
    buf: &mut BytesMut,
    client_ip: IpAddr,
    target: &Target,
    dst: SocketAddr,
) -> anyhow::Result<Upstream> {
    let current = ctx.discovery.current(dst.ip());
    let router = current.as_ref().map_or(&target.router, |t| &t.router);
    let sni = if router.tls.is_empty() {
        None
    } else {
        detect::sni(app, buf, ctx.detect_timeout).await
    };
    let src = ctx.source.load();
    let mut rng = fastrand::Rng::new();
    let dest = router
        .l4_dest(dst.ip(), dst.port(), &src, sni.as_deref(), &mut rng)
        .ok_or_else(|| anyhow::anyhow!("no tcp or tls route takes {dst} (sni {sni:?})"))?;
    let backend = router
        .backends
        .get(&dest.host)
        .ok_or_else(|| anyhow::anyhow!("no backend for {}", dest.host))?;
    let service = match &target.resolved {
        Resolved::Service(svc) => {
            if dest.host == svc.hostname && svc.port(dst.port()).is_none() {
                anyhow::bail!("service {} has no port {}", svc.hostname, dst.port());
            }
            dest.host.clone()
        }
        Resolved::Workload(w) => w.address.to_string(),
    };
    let svc_port = backend.service_port(dest.port, dst.port());
    let sub = backend
        .subset(&dest.subset, svc_port)
        .ok_or_else(|| anyhow::anyhow!("{} has no subset {:?}", dest.host, dest.subset))?;
    let permit = sub
        .limits
        .connection()
        .map_err(|_| anyhow::anyhow!("{}: maxConnections reached (UO)", dest.host))?;
    let key = Some(crate::traffic::balance::hash(
        client_ip.to_string().as_bytes(),
    ));
    let mut tried = Vec::new();
    let mut last = None;
    for _ in 0..ATTEMPTS {
        let Some((_, w, ep)) = backend.choose(sub, key, &mut tried, &mut rng) else {
            break;
        };
        let port = backend.endpoint_port(ep, svc_port);
        let result =
            connect_workload(ctx, w, port, service.clone(), sub.conn.connect_timeout).await;
        let seen = if result.is_ok() {
            Observed::Success
        } else {
            Observed::LocalFailure
        };
        observe(ctx, sub, &dest.host, w.address, seen);
        match result {
            Ok(mut u) => {
                u.permit = permit;
                return Ok(u);
            }
            Err(e) => {
                tracing::warn!(endpoint = %w.address, error = %e, "endpoint connect failed");
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("{} has no ready endpoints", dest.host)))
}

async fn connect_workload(
    ctx: &Ctx,
    w: &Workload,
    port: u16,
    service: String,
    timeout: Duration,
) -> anyhow::Result<Upstream> {
    let service = if service.is_empty() {
        w.address.to_string()
    } else {
        service
    };
    let base = |io: Box<dyn Io>, principal: String, mtls: bool| Upstream {
        io,
        service: service.clone(),
        workload: w.name.clone(),
        namespace: w.namespace.clone(),
        principal,
        mtls,
        permit: None,
    };
    match &w.identity {
        None => Ok(base(
            Box::new(connect_plain(SocketAddr::new(w.address, port), timeout).await?),
            "unknown".into(),
            false,
        )),
        Some(id) => {
            let mut tls = connect_mtls(
                ctx,
                SocketAddr::new(w.address, ports::MTLS),
                id,
                transport::ALPN_TCP,
                timeout,
            )
            .await?;
            tls.write_all(&transport::encode(port)).await?;
            Ok(base(Box::new(tls), id.to_string(), true))
        }
    }
}

/// mTLS to a peer proxy with `alpn`, checking that it is `expected`.
pub(crate) async fn connect_mtls(
    ctx: &Ctx,
    addr: SocketAddr,
    expected: &SpiffeId,
    alpn: &[u8],
    timeout: Duration,
) -> anyhow::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = connect_plain(addr, timeout).await?;
    let config = if alpn == transport::ALPN_H2 {
        &ctx.client_tls_h2
    } else {
        &ctx.client_tls
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
