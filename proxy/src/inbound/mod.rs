//! Inbound: mTLS from peer proxies on the mTLS port (the client's SPIFFE
//! ID verified, the target port read from the transport header), and
//! plaintext redirected from outside the mesh: accepted where the
//! PeerAuthentication in force is PERMISSIVE or DISABLE (HTTP is then
//! parsed by the same inbound HTTP stack as mTLS requests), closed before
//! its first byte is read where it is STRICT, and counted. Both are
//! forwarded to the app on the pod's own address.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use crate::connect::Upstreams;
use crate::detect::{self, Protocol};
use crate::discovery::Discovery;
use crate::drain::Watch;
use crate::metrics::{ConnLabels, Reporter, Side, Svc};
use crate::prefixed::Prefixed;
use crate::traffic::ratelimit::Policies;
use crate::{Pod, Settings, Telemetry, orig_dst, ports, transport};
use api::peer::{Peer, ServiceRef, UNKNOWN};

pub(crate) mod http;

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the inbound side uses.
pub(crate) struct Inbound {
    /// The TLS server side, as this pod's identity.
    pub server_tls: Arc<rustls::ServerConfig>,
    /// The pod it serves.
    pub pod: Arc<Pod>,
    /// Where this workload's policy comes from.
    pub discovery: Arc<Discovery>,
    /// How the app is reached.
    pub upstreams: Arc<Upstreams>,
    /// Metrics.
    pub telemetry: Arc<Telemetry>,
    /// Detection settings.
    pub settings: Settings,
    /// This workload's rate limiters.
    pub rate_limits: Policies,
    /// The outbound side, for requests of the proxy's own (an external
    /// authorizer's checks).
    pub outbound: Arc<crate::outbound::Outbound>,
}

/// Serves the mTLS port.
pub(crate) async fn serve_mtls(listener: TcpListener, ib: Arc<Inbound>, drain: Watch) {
    let acceptor = TlsAcceptor::from(ib.server_tls.clone());
    let watch = drain.clone();
    crate::accept::serve(listener, "inbound mTLS", watch, move |tcp| {
        let (ib, acceptor, drain) = (ib.clone(), acceptor.clone(), drain.clone());
        async move { handle_mtls(&ib, acceptor, tcp, drain).await }
    })
    .await;
}

async fn handle_mtls(
    ib: &Arc<Inbound>,
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    drain: Watch,
) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let local = tcp.local_addr()?;
    let client = tcp.peer_addr()?.ip();
    let mut tls = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
        .await
        .map_err(|_| anyhow::anyhow!("TLS handshake timed out"))??;
    let peer = common::tls::peer_identity(tls.get_ref().1.peer_certificates())
        .ok_or_else(|| anyhow::anyhow!("peer has no SPIFFE identity"))?;
    if tls.get_ref().1.alpn_protocol() == Some(transport::ALPN_H2) {
        http::serve_peer(ib.clone(), tls, peer, local.ip(), client, &drain).await;
        return Ok(());
    }
    let (port, told) = tokio::time::timeout(HANDSHAKE_TIMEOUT, transport::read(&mut tls))
        .await
        .map_err(|_| anyhow::anyhow!("no transport header"))??;
    anyhow::ensure!(
        port != ports::MTLS && port != ports::INBOUND,
        "refusing a loop to port {port}"
    );
    let principal = peer.to_string();
    let app = SocketAddr::new(local.ip(), port);
    if !connection_allowed(ib, principal.trim_start_matches("spiffe://"), client, app) {
        return Ok(());
    }
    let mut source = Peer::decode(&told);
    source.namespace = peer.namespace().to_string();
    let service = ServiceRef::decode(&told);
    let from = Side {
        peer: &source,
        principal: &principal,
    };
    forward(ib, tls, app, from, service.as_ref(), true).await
}

/// Serves the plaintext inbound port: HTTP goes through the inbound HTTP
/// stack (parsed, limited, rate limited, counted) like mTLS requests do;
/// anything else is forwarded as bytes.
pub(crate) async fn serve_plain(listener: TcpListener, ib: Arc<Inbound>, drain: Watch) {
    let watch = drain.clone();
    crate::accept::serve(listener, "inbound", watch, move |mut tcp| {
        let (ib, drain) = (ib.clone(), drain.clone());
        async move {
            tcp.set_nodelay(true)?;
            let client = tcp.peer_addr()?.ip();
            let dst = orig_dst::original_dst(&tcp)?;
            anyhow::ensure!(
                dst.port() != ports::INBOUND,
                "connection to the inbound port itself"
            );
            if plaintext_refused(&ib, dst.port()) {
                ib.telemetry
                    .metrics
                    .refused("plaintext_under_strict", dst.port());
                tracing::debug!(port = dst.port(), "plaintext refused: STRICT");
                // Dropped unread: nothing reaches the app.
                return Ok(());
            }
            let mut buf = BytesMut::new();
            let proto = if ib.settings.opaque_ports.contains(&dst.port()) {
                Protocol::Opaque
            } else {
                detect::detect(&mut tcp, &mut buf, ib.settings.detect_timeout, false).await
            };
            let io = Prefixed::new(buf.freeze(), tcp);
            if proto == Protocol::Opaque {
                if !connection_allowed(&ib, "", client, dst) {
                    return Ok(());
                }
                let unknown = Peer::unknown();
                let from = Side {
                    peer: &unknown,
                    principal: UNKNOWN,
                };
                forward(&ib, io, dst, from, None, false).await
            } else {
                http::serve_plain(ib, io, dst, client, proto, &drain).await;
                Ok(())
            }
        }
    })
    .await;
}

/// Whether the PeerAuthentication in force is STRICT for `port` (a
/// workload whose own resource is not known yet is PERMISSIVE, as one
/// without a policy; its proxy is not ready before it is).
fn plaintext_refused(ib: &Inbound, port: u16) -> bool {
    let mode = own_policy(ib, |p| api::proto::mtls_mode(p.peer_auth.as_ref(), port));
    mode == Some(api::proto::MtlsMode::Strict)
}

/// `f` of this workload's own policy, borrowed from its discovery
/// resource (nothing is copied on the request path); `None` when it has
/// none or its resource is not known yet.
pub(crate) fn own_policy<T>(
    ib: &Inbound,
    f: impl FnOnce(&api::proto::WorkloadPolicy) -> T,
) -> Option<T> {
    let me = ib.discovery.current(ib.pod.ip)?;
    match &me.resolved {
        api::discovery::Resolved::Workload(w) => w.policy.as_deref().map(f),
        _ => None,
    }
}

/// The decision of the AuthorizationPolicies that apply to this workload
/// on `req`; `None` when there are none.
pub(crate) fn authorize(
    ib: &Inbound,
    req: &api::authz::Request<'_>,
) -> Option<api::authz::Decision> {
    own_policy(ib, |p| {
        (!p.authz.is_empty()).then(|| api::authz::decide(&p.authz, req))
    })
    .flatten()
}

/// What a request or connection from `client` (with `principal`, empty
/// in plaintext) to the app at `app` is judged on.
pub(crate) fn request<'a>(
    principal: &'a str,
    client: std::net::IpAddr,
    app: SocketAddr,
    http: Option<&'a dyn api::authz::Http>,
) -> api::authz::Request<'a> {
    let namespace = principal
        .split_once("/ns/")
        .and_then(|(_, r)| r.split_once('/'))
        .map_or("", |(ns, _)| ns);
    api::authz::Request {
        principal,
        namespace,
        source_ip: client,
        remote_ip: client,
        destination_ip: app.ip(),
        destination_port: app.port(),
        sni: "",
        http,
        auth: None,
    }
}

/// Whether the AuthorizationPolicies let a TCP connection through (a
/// denied one is closed unread, and counted).
fn connection_allowed(
    ib: &Inbound,
    principal: &str,
    client: std::net::IpAddr,
    app: SocketAddr,
) -> bool {
    let Some(d) = authorize(ib, &request(principal, client, app, None)) else {
        return true;
    };
    if !d.allowed {
        let policy = d.reason.map(|r| r.policy).unwrap_or_default();
        tracing::debug!(%policy, port = app.port(), "connection denied by authorization policy");
        ib.telemetry.metrics.denied(&policy);
    }
    d.allowed
}

/// Copies a stream from `source` to the app at `app_addr`, counted.
async fn forward<S: AsyncRead + AsyncWrite + Unpin>(
    ib: &Inbound,
    mut downstream: S,
    app_addr: SocketAddr,
    source: Side<'_>,
    service: Option<&ServiceRef>,
    mtls: bool,
) -> anyhow::Result<()> {
    let mut app = TcpStream::connect(app_addr).await?;
    app.set_nodelay(true)?;
    let me = ib.pod.me.load();
    let principal = ib.pod.identity.id().to_string();
    let labels = ConnLabels {
        reporter: Reporter::Destination,
        source,
        destination: Side {
            peer: &me.peer,
            principal: &principal,
        },
        service: service.map_or(Svc::UNKNOWN, Svc::from),
        protocol: "tcp",
        flags: "-",
        mtls,
    };
    let metrics = &ib.telemetry.metrics;
    let overrides = ib.telemetry.observe.load().metrics.clone();
    metrics.opened(&labels, &overrides);
    let result = tokio::io::copy_bidirectional(&mut downstream, &mut app).await;
    let (received, sent) = result.as_ref().map(|(a, b)| (*a, *b)).unwrap_or((0, 0));
    metrics.closed(&labels, &overrides, sent, received);
    result?;
    Ok(())
}
