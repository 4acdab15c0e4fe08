//! The mesh's sidecar data plane, as a library: [`run`] wires the pieces
//! that `mesh-proxy run` starts, and in-process tests build the same
//! stacks over loopback sockets.
//!
//! Data flows one way: accept ([`accept`]) -> detect ([`detect`]) ->
//! the outbound or inbound stack ([`outbound`], [`inbound`], built in
//! named steps of one layer each) -> connect ([`connect`]). Around them:
//! certificates ([`identity`]) and configuration ([`discovery`]) from the
//! controller, the compiled policy the layers apply ([`traffic`]), the
//! admin and health endpoints ([`admin`]), and the init rules
//! ([`redirect`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::spiffe::SpiffeId;
use tokio::net::TcpListener;
use tokio::sync::Notify;

mod accept;
mod access_log;
mod admin;
mod connect;
mod control;
mod denials;
mod detect;
mod discovery;
mod drain;
mod http;
mod identity;
mod inbound;
pub mod memory;
mod metrics;
mod observe;
mod orig_dst;
mod outbound;
mod ports;
mod prefixed;
pub mod redirect;
mod tap;
#[cfg(test)]
mod testing;
mod trace;
mod traffic;
mod transport;
pub mod wait;

/// What `mesh-proxy run` is told.
#[derive(Debug, Clone)]
pub struct Config {
    /// The controller's gRPC address, `host:port`.
    pub controller: String,
    /// Trust domain.
    pub trust_domain: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's ServiceAccount.
    pub service_account: String,
    /// The pod's name.
    pub pod: String,
    /// The workload (Deployment) name, for metrics.
    pub workload: String,
    /// The pod's IP.
    pub pod_ip: IpAddr,
    /// File holding the bootstrap token.
    pub token_file: PathBuf,
    /// Trust anchors, PEM.
    pub trust_anchors: PathBuf,
    /// How long a first connection to an address waits for discovery.
    pub discovery_wait: Duration,
    /// Detection and opaque ports.
    pub settings: Settings,
    /// How long a SIGTERM waits for open connections to finish.
    pub drain_grace: Duration,
    /// The JSON access log on stdout.
    pub access_log: bool,
    /// The app's probes that kubelet sends through the proxy, as the
    /// injector wrote them (`MESH_APP_PROBERS`).
    pub app_probers: Option<String>,
}

/// How connections are classified.
#[derive(Debug, Clone)]
pub struct Settings {
    /// How long an undeclared port waits for the client's first bytes
    /// before the connection is taken for opaque TCP.
    pub detect_timeout: Duration,
    /// Ports never parsed (server-speaks-first protocols).
    pub opaque_ports: Vec<u16>,
}

/// The pod this proxy serves.
pub(crate) struct Pod {
    /// Its workload (Deployment) name.
    pub workload: String,
    /// Its address (its own discovery resource carries its policy).
    pub ip: IpAddr,
    /// Its identity and certificate.
    pub identity: Arc<common::tls::Identity>,
    /// Its labels and namespace, once discovery told them (for routes'
    /// `sourceLabels` and `sourceNamespace`).
    pub source: arc_swap::ArcSwap<traffic::matching::Source>,
    /// This pod as metric labels name it, and as its peers are told.
    pub me: arc_swap::ArcSwap<Me>,
}

impl Pod {
    /// The pod of `workload` at `ip` in `namespace`, its labels not known
    /// yet.
    pub fn new(
        workload: &str,
        ip: IpAddr,
        identity: Arc<common::tls::Identity>,
        namespace: &str,
    ) -> Self {
        Self {
            workload: workload.to_string(),
            ip,
            identity,
            source: arc_swap::ArcSwap::from_pointee(traffic::matching::Source {
                labels: Default::default(),
                namespace: namespace.to_string(),
            }),
            me: arc_swap::ArcSwap::from_pointee(Me::new(api::peer::Peer::from_labels(
                workload,
                namespace,
                &Default::default(),
            ))),
        }
    }
}

/// A pod's workload as labels name it, and the `x-mesh-peer` value that
/// tells peers (made once per change, not per request).
pub(crate) struct Me {
    /// The labels.
    pub peer: api::peer::Peer,
    /// Their text form.
    pub text: String,
    /// As a header value.
    pub header: hyper::header::HeaderValue,
}

impl Me {
    /// `peer`, with its text made.
    pub fn new(peer: api::peer::Peer) -> Self {
        let text = peer.encode();
        let header = hyper::header::HeaderValue::from_str(&text)
            .unwrap_or_else(|_| hyper::header::HeaderValue::from_static("w=unknown"));
        Self { peer, text, header }
    }
}

/// Istio's metrics, the access log and tracing.
pub(crate) struct Telemetry {
    /// The metrics registry.
    pub metrics: metrics::Metrics,
    /// Where requests are logged (which ones: [`observe`]); its writer
    /// starts when something first turns the log on ([`Self::logging`]),
    /// so that a proxy that never logs keeps no thread for it.
    pub access_log: std::sync::OnceLock<access_log::AccessLog>,
    /// What the workload's Telemetry resources ask.
    pub observe: arc_swap::ArcSwap<observe::Observe>,
    /// Whether the access log is on without a Telemetry
    /// (`MESH_ACCESS_LOG`).
    pub default_log: bool,
    /// Span export counters.
    pub spans: trace::export::Counters,
    /// The requests refused last.
    pub denials: denials::Denials,
    /// Live requests for whoever watches.
    pub tap: tap::Tap,
}

impl Telemetry {
    /// Starts the access log's writer unless it runs (a writer that
    /// cannot start is said once, and requests go unlogged).
    pub fn logging(&self) {
        if self.access_log.get().is_some() {
            return;
        }
        match access_log::AccessLog::start(self.metrics.access_log_dropped.clone()) {
            Ok(log) => {
                let _ = self.access_log.set(log);
            }
            Err(e) => tracing::error!(error = %e, "the access log's writer did not start"),
        }
    }
}

/// Keeps `pod.source` current with this pod's labels, from the discovery
/// of the pod's own address.
/// Follows the pod's own resource: its labels (for route matches) and
/// whether its app has exited for good (a Job's pod), which ends the
/// proxy so that the pod can complete.
async fn own_workload(
    pod: Arc<Pod>,
    discovery: Arc<discovery::Discovery>,
    outbound: Arc<outbound::Outbound>,
    leave: Arc<Notify>,
) {
    let mut changes = discovery.changes();
    loop {
        if let discovery::Lookup::Mesh(t) = discovery.lookup(pod.ip).await
            && let api::discovery::Resolved::Workload(w) = &t.resolved
        {
            if pod.source.load().labels != w.labels {
                pod.source.store(Arc::new(traffic::matching::Source {
                    labels: w.labels.clone(),
                    namespace: w.namespace.clone(),
                }));
                pod.me.store(Arc::new(Me::new(api::peer::Peer::from_labels(
                    &pod.workload,
                    &w.namespace,
                    &w.labels,
                ))));
            }
            // After the labels: spans name the workload by them.
            observe::follow(
                &outbound,
                w.policy.as_ref().and_then(|p| p.telemetry.as_ref()),
            );
            if w.policy.as_ref().is_some_and(|p| p.app_exited) {
                tracing::info!("the app's containers have exited: the proxy leaves");
                leave.notify_one();
                return;
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), changes.changed()).await;
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

/// Runs the proxy until SIGTERM (or Ctrl-C), then drains.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let id = SpiffeId::new(&cfg.trust_domain, &cfg.namespace, &cfg.service_account)?;
    let anchors_pem = std::fs::read_to_string(&cfg.trust_anchors)
        .with_context(|| format!("reading {}", cfg.trust_anchors.display()))?;
    let anchors = common::pki::pem_certs(&anchors_pem)?;
    anyhow::ensure!(
        !anchors.is_empty(),
        "{}: no certificate",
        cfg.trust_anchors.display()
    );
    let ident = common::tls::Identity::new(id.clone(), anchors)?;
    let controller = control::ControllerAddr {
        addr: control::parse_addr(&cfg.controller)
            .map_err(|e| anyhow::anyhow!("MESH_CONTROLLER: {e}"))?,
        identity: SpiffeId::new(&cfg.trust_domain, "mesh-system", "mesh-controller")?,
    };

    let any = |port| SocketAddr::new(Ipv4Addr::UNSPECIFIED.into(), port);
    let outbound_l = bind(any(ports::OUTBOUND)).await?;
    let inbound_l = bind(any(ports::INBOUND)).await?;
    let mtls_l = bind(any(ports::MTLS)).await?;
    let health_l = bind(any(ports::HEALTH)).await?;
    let admin_l = bind(SocketAddr::new(Ipv4Addr::LOCALHOST.into(), ports::ADMIN)).await?;

    tokio::spawn(identity::run(
        controller.clone(),
        ident.clone(),
        cfg.token_file.clone(),
    ));
    let node = api::proto::Node {
        pod: cfg.pod.clone(),
        namespace: cfg.namespace.clone(),
        ip: cfg.pod_ip.to_string(),
    };
    let discovery =
        discovery::Discovery::start(controller.clone(), ident.clone(), node, cfg.discovery_wait);
    let (drainer, drain) = drain::channel();
    let upstreams = Arc::new(connect::Upstreams::new(&ident)?);
    let metrics = metrics::Metrics::new()?;
    let spans = metrics.span_counters();
    let telemetry = Arc::new(Telemetry {
        metrics,
        access_log: std::sync::OnceLock::new(),
        observe: arc_swap::ArcSwap::from_pointee(observe::Observe::defaults(cfg.access_log)),
        default_log: cfg.access_log,
        spans,
        denials: denials::Denials::default(),
        tap: tap::Tap::default(),
    });
    if cfg.access_log {
        telemetry.logging();
    }
    let pod = Arc::new(Pod::new(
        &cfg.workload,
        cfg.pod_ip,
        ident.clone(),
        &cfg.namespace,
    ));
    let leave = Arc::new(Notify::new());
    tokio::spawn({
        let upstreams = upstreams.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                upstreams.reap();
            }
        }
    });
    tracing::info!(%id, pod = %cfg.pod, "proxy starting");
    let outbound = Arc::new(outbound::Outbound {
        pod: pod.clone(),
        discovery: discovery.clone(),
        upstreams: upstreams.clone(),
        telemetry: telemetry.clone(),
        settings: cfg.settings.clone(),
        speakers: outbound::Speakers::default(),
    });
    tokio::spawn(own_workload(
        pod.clone(),
        discovery.clone(),
        outbound.clone(),
        leave.clone(),
    ));
    let inbound = Arc::new(inbound::Inbound {
        outbound: outbound.clone(),
        server_tls: ident.server_config(&[transport::ALPN_TCP, transport::ALPN_H2])?,
        pod: pod.clone(),
        discovery: discovery.clone(),
        upstreams,
        telemetry: telemetry.clone(),
        settings: cfg.settings,
        rate_limits: traffic::ratelimit::Policies::default(),
    });
    tokio::spawn(outbound::serve(outbound_l, outbound, drain.clone()));
    tokio::spawn(inbound::serve_plain(
        inbound_l,
        inbound.clone(),
        drain.clone(),
    ));
    tokio::spawn(inbound::serve_mtls(mtls_l, inbound.clone(), drain.clone()));
    let app_probes = match &cfg.app_probers {
        Some(json) => admin::AppProbes::parse(json, cfg.pod_ip)?,
        None => admin::AppProbes::default(),
    };
    let admin = Arc::new(admin::State {
        pod,
        discovery,
        telemetry,
        controller,
        drain,
        app_probes,
        inbound,
    });
    let admin_router = admin::admin(admin.clone());
    tokio::spawn(async move {
        let _ = axum::serve(admin_l, admin_router).await;
    });
    tokio::spawn(async move {
        let _ = axum::serve(health_l, admin::health(admin)).await;
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        () = leave.notified() => {}
    }
    tracing::info!(grace = ?cfg.drain_grace, "proxy draining");
    let left = drainer.run(cfg.drain_grace).await;
    tracing::info!(connections_cut = left, "proxy stopping");
    Ok(())
}
