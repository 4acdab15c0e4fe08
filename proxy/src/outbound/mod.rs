//! Outbound: connections the app makes, redirected to us. Each is
//! resolved through discovery, then classified: HTTP goes through the
//! outbound HTTP stack ([`http`]), anything else is routed and balanced
//! as opaque TCP ([`tcp`]); addresses outside the mesh pass through
//! unchanged (or are refused under `REGISTRY_ONLY`).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use api::discovery::Resolved;
use api::protocol::AppProtocol;
use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use crate::connect::Upstreams;
use crate::detect::{self, Protocol};
use crate::discovery::{Discovery, Lookup};
use crate::drain::Watch;
use crate::metrics::{ConnLabels, Metrics, Reporter, Side, Svc};
use crate::prefixed::Prefixed;
use crate::traffic::backend::Subset;
use crate::traffic::outlier::Observed;
use crate::{Pod, Settings, Telemetry, orig_dst, ports};

mod first_speaker;
pub(crate) mod http;
mod tcp;

use first_speaker::Speaker;
pub(crate) use first_speaker::Speakers;

/// How long a connect to an endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// What the outbound side uses.
pub(crate) struct Outbound {
    /// The pod it serves.
    pub pod: Arc<Pod>,
    /// Where destinations are resolved.
    pub discovery: Arc<Discovery>,
    /// How upstreams are reached.
    pub upstreams: Arc<Upstreams>,
    /// Metrics and the access log.
    pub telemetry: Arc<Telemetry>,
    /// Detection settings.
    pub settings: Settings,
    /// Who speaks first, by destination (undeclared ports).
    pub speakers: Speakers,
}

/// Accepts redirected connections until the drain.
pub(crate) async fn serve(listener: TcpListener, ob: Arc<Outbound>, drain: Watch) {
    let watch = drain.clone();
    crate::accept::serve(listener, "outbound", watch, move |tcp| {
        let (ob, drain) = (ob.clone(), drain.clone());
        async move { handle(&ob, tcp, drain).await }
    })
    .await;
}

/// How a connection to a mesh target is handled: a declared opaque port
/// skips detection, a declared HTTP port is parsed as what it proves to
/// be (never opaque), anything else is detected with a bounded wait
/// (well-known server-speaks-first ports excepted). What detection read
/// is in `buf`.
async fn protocol(
    ob: &Outbound,
    app: &mut TcpStream,
    buf: &mut BytesMut,
    target: &Resolved,
    dst: SocketAddr,
) -> anyhow::Result<(Protocol, bool)> {
    let (settings, port) = (&ob.settings, dst.port());
    let declared = match target {
        Resolved::Service(svc) => svc.port(port).map(|p| p.protocol).unwrap_or_default(),
        Resolved::Workload(_) => AppProtocol::Detect,
    };
    let mut learn = false;
    let proto = match declared {
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
        AppProtocol::Detect if settings.opaque_ports.contains(&port) => Protocol::Opaque,
        AppProtocol::Detect => match ob.speakers.get(dst) {
            Some(Speaker::Server) => Protocol::Opaque,
            known => {
                let p = detect::detect(app, buf, settings.detect_timeout, false).await;
                match known {
                    Some(Speaker::Client) if p == Protocol::Opaque && buf.is_empty() => {
                        // Client-first: no upstream until the client speaks.
                        let p = detect::detect(app, buf, first_speaker::SILENT_CLIENT_WAIT, false)
                            .await;
                        anyhow::ensure!(!buf.is_empty(), "the client stayed silent");
                        p
                    }
                    None => {
                        learn = p == Protocol::Opaque && buf.is_empty();
                        p
                    }
                    _ => p,
                }
            }
        },
    };
    Ok((proto, learn))
}

/// How long a port declared HTTP waits for the client's first bytes.
const DECLARED_HTTP_WAIT: Duration = Duration::from_secs(10);

const REQUEST_TIMEOUT: &[u8] =
    b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";

async fn handle(ob: &Arc<Outbound>, mut app: TcpStream, drain: Watch) -> anyhow::Result<()> {
    app.set_nodelay(true)?;
    let dst = orig_dst::original_dst(&app)?;
    if dst.port() == ports::OUTBOUND && dst.ip() == app.local_addr()?.ip() {
        anyhow::bail!("connection to the outbound port itself");
    }
    let client_ip = app.peer_addr()?.ip();
    let lookup = ob.discovery.lookup(dst.ip()).await;
    let mut buf = BytesMut::new();
    let mut learn = false;
    if let Lookup::Mesh(target) = &lookup {
        let proto;
        (proto, learn) = protocol(ob, &mut app, &mut buf, &target.resolved, dst).await?;
        if proto != Protocol::Opaque {
            let app = Prefixed::new(buf.freeze(), app);
            let conn = http::Conn {
                client: client_ip,
                source: ob.pod.source.load_full(),
                dst,
                proto,
            };
            http::serve(ob, app, target.clone(), conn, &drain).await;
            return Ok(());
        }
    }
    if matches!(lookup, Lookup::Passthrough) && registry_only(ob) {
        return blackhole(ob, app, buf, dst).await;
    }
    let mut up = match lookup {
        Lookup::Passthrough => tcp::Upstream::passthrough(
            Box::new(crate::connect::plain(dst, CONNECT_TIMEOUT).await?),
            dst,
        ),
        Lookup::Mesh(target) => {
            tcp::connect(ob, &mut app, &mut buf, client_ip, &target, dst).await?
        }
    };
    if learn {
        ob.speakers.observe(dst, &mut app, &mut up.io).await?;
    }
    let mut app = Prefixed::new(buf.freeze(), app);
    let me = ob.pod.me.load();
    let principal = ob.pod.identity.id().to_string();
    let labels = labels(
        Side {
            peer: &me.peer,
            principal: &principal,
        },
        Side {
            peer: &up.peer,
            principal: &up.principal,
        },
        Svc::from(&up.service),
        up.mtls,
    );
    let metrics = &ob.telemetry.metrics;
    let overrides = ob.telemetry.observe.load().metrics.clone();
    metrics.opened(&labels, &overrides);
    let result = tokio::io::copy_bidirectional(&mut app, &mut up.io).await;
    let (sent, received) = result.as_ref().map(|(a, b)| (*a, *b)).unwrap_or((0, 0));
    metrics.closed(&labels, &overrides, sent, received);
    result?;
    Ok(())
}

/// Metric labels of a connection from this workload.
fn labels<'a>(
    source: Side<'a>,
    destination: Side<'a>,
    service: Svc<'a>,
    mtls: bool,
) -> ConnLabels<'a> {
    ConnLabels {
        reporter: Reporter::Source,
        source,
        destination,
        service,
        protocol: "tcp",
        flags: "-",
        mtls,
    }
}

/// Counts a try's result for outlier detection; an ejection is logged
/// and counted.
pub(crate) fn observe(metrics: &Metrics, sub: &Subset, host: &str, ip: IpAddr, seen: Observed) {
    if sub.observe(ip, seen) {
        ejected(metrics, host, ip);
    }
}

/// Logs and counts an ejection.
pub(crate) fn ejected(metrics: &Metrics, host: &str, ip: IpAddr) {
    tracing::info!(%host, endpoint = %ip, "endpoint ejected");
    metrics.ejected(host);
}

/// Whether this workload's Sidecar says `REGISTRY_ONLY`.
fn registry_only(ob: &Outbound) -> bool {
    ob.discovery
        .current(ob.pod.ip)
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
    ob: &Outbound,
    mut app: TcpStream,
    mut buf: BytesMut,
    dst: SocketAddr,
) -> anyhow::Result<()> {
    let me = ob.pod.me.load();
    let principal = ob.pod.identity.id().to_string();
    let unknown = api::peer::Peer::unknown();
    let labels = labels(
        Side {
            peer: &me.peer,
            principal: &principal,
        },
        Side {
            peer: &unknown,
            principal: api::peer::UNKNOWN,
        },
        Svc {
            host: "BlackHoleCluster",
            name: "BlackHoleCluster",
            namespace: api::peer::UNKNOWN,
        },
        false,
    );
    let overrides = ob.telemetry.observe.load().metrics.clone();
    ob.telemetry.metrics.opened(&labels, &overrides);
    ob.telemetry.metrics.closed(&labels, &overrides, 0, 0);
    if detect::detect(&mut app, &mut buf, ob.settings.detect_timeout, false).await
        == Protocol::Http1
    {
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
