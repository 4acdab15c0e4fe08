//! `mesh-proxy`: the sidecar. `init` installs traffic redirection in the
//! pod's network namespace; `run` is the data plane: outbound balancing
//! over mTLS, inbound mTLS termination, certificates and discovery from the
//! controller, health and admin endpoints.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use api::spiffe::SpiffeId;
use clap::{Parser, Subcommand};
use tokio::net::TcpListener;

mod accept;
mod access_log;
mod admin;
mod control;
mod detect;
mod discovery;
mod drain;
mod http;
mod identity;
mod inbound;
mod metrics;
mod orig_dst;
mod outbound;
mod ports;
mod prefixed;
mod redirect;
mod traffic;
mod transport;

#[derive(Parser, Debug)]
#[command(version, about = "The mesh sidecar proxy")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Install the iptables redirection in the current network namespace.
    Init(redirect::RedirectConfig),
    /// Run the proxy.
    Run(Box<RunArgs>),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The controller's gRPC address.
    #[arg(long, env = "MESH_CONTROLLER")]
    controller: SocketAddr,
    /// Trust domain.
    #[arg(long, env = "MESH_TRUST_DOMAIN", default_value = api::spiffe::DEFAULT_TRUST_DOMAIN)]
    trust_domain: String,
    /// The pod's namespace.
    #[arg(long, env = "POD_NAMESPACE")]
    namespace: String,
    /// The pod's ServiceAccount.
    #[arg(long, env = "SERVICE_ACCOUNT")]
    service_account: String,
    /// The pod's name.
    #[arg(long, env = "POD_NAME")]
    pod: String,
    /// The workload (Deployment) name, for metrics.
    #[arg(long, env = "MESH_WORKLOAD")]
    workload: String,
    /// The pod's IP.
    #[arg(long, env = "POD_IP")]
    pod_ip: IpAddr,
    /// File holding the bootstrap token.
    #[arg(long, env = "MESH_TOKEN_FILE")]
    token_file: PathBuf,
    /// Trust anchors, PEM.
    #[arg(long, env = "MESH_TRUST_ANCHORS")]
    trust_anchors: PathBuf,
    /// How long a first connection to an address waits for discovery.
    #[arg(long, default_value = "2s", value_parser = api::duration::parse)]
    discovery_wait: Duration,
    /// How long an undeclared port waits for the client's first bytes
    /// before the connection is taken for opaque TCP (server speaks first).
    #[arg(long, env = "MESH_DETECT_TIMEOUT", default_value = "100ms", value_parser = api::duration::parse)]
    detect_timeout: Duration,
    /// Ports never parsed (server-speaks-first protocols: SMTP, MySQL,
    /// Galera, Postgres, Redis, Elasticsearch, Memcached), as Linkerd's default.
    #[arg(
        long,
        env = "MESH_OPAQUE_PORTS",
        value_delimiter = ',',
        default_value = "25,587,3306,4444,5432,6379,9300,11211"
    )]
    opaque_ports: Vec<u16>,
    /// Runtime worker threads.
    #[arg(long, env = "MESH_PROXY_WORKERS", default_value_t = 2)]
    workers: usize,
    /// How long a SIGTERM waits for open connections to finish (Istio's
    /// terminationDrainDuration).
    #[arg(long, env = "MESH_DRAIN_GRACE", default_value = "5s", value_parser = api::duration::parse)]
    drain_grace: Duration,
    /// The JSON access log on stdout: `on` or `off`.
    #[arg(long, env = "MESH_ACCESS_LOG", default_value = "on", value_parser = ["on", "off"])]
    access_log: String,
}

/// What every connection handler shares.
pub struct Ctx {
    identity: Arc<common::tls::Identity>,
    discovery: Arc<discovery::Discovery>,
    metrics: metrics::Metrics,
    client_tls: Arc<rustls::ClientConfig>,
    client_tls_h2: Arc<rustls::ClientConfig>,
    server_tls: Arc<rustls::ServerConfig>,
    /// One multiplexed HTTP/2 mTLS connection per peer proxy.
    peers: http::pool::H2Pool<SocketAddr>,
    /// HTTP/2 to apps and unmeshed endpoints, one connection per address.
    direct_h2: http::pool::H2Pool<SocketAddr>,
    /// HTTP/1.1 to apps and unmeshed endpoints, pooled keep-alive.
    http1: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http::Body,
    >,
    detect_timeout: Duration,
    opaque_ports: Vec<u16>,
    controller: control::ControllerAddr,
    workload: String,
    /// This pod's labels and namespace, once discovery told them.
    source: arc_swap::ArcSwap<traffic::matching::Source>,
    access_log: bool,
    /// This pod's address (its own discovery resource carries its policy).
    pod_ip: IpAddr,
    /// Rate limiters of this workload.
    rate_limits: traffic::ratelimit::Policies,
    /// Set once SIGTERM starts the drain.
    drain: drain::Watch,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    common::logging::init("info");
    match cli.cmd {
        Cmd::Init(cfg) => cfg.apply(),
        Cmd::Run(args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.workers.max(1))
            .enable_all()
            .build()?
            .block_on(run(*args)),
    }
}

fn http1_client() -> hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http::Body,
> {
    let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(3)));
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// Keeps `ctx.source` current with this pod's labels (for routes'
/// `sourceLabels`), from the discovery of the pod's own address.
async fn own_labels(ctx: Arc<Ctx>, ip: IpAddr) {
    loop {
        if let discovery::Lookup::Mesh(t) = ctx.discovery.lookup(ip).await
            && let api::discovery::Resolved::Workload(w) = &t.resolved
            && ctx.source.load().labels != w.labels
        {
            ctx.source.store(Arc::new(traffic::matching::Source {
                labels: w.labels.clone(),
                namespace: w.namespace.clone(),
            }));
        }
        tokio::time::sleep(Duration::from_secs(5)).await;
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding {addr}"))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let id = SpiffeId::new(&args.trust_domain, &args.namespace, &args.service_account)?;
    let anchors_pem = std::fs::read_to_string(&args.trust_anchors)
        .with_context(|| format!("reading {}", args.trust_anchors.display()))?;
    let anchors = common::pki::pem_certs(&anchors_pem)?;
    anyhow::ensure!(
        !anchors.is_empty(),
        "{}: no certificate",
        args.trust_anchors.display()
    );
    let ident = common::tls::Identity::new(id.clone(), anchors)?;
    let controller = control::ControllerAddr {
        addr: args.controller,
        identity: SpiffeId::new(&args.trust_domain, "mesh-system", "mesh-controller")?,
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
        args.token_file.clone(),
    ));
    let node = api::proto::Node {
        pod: args.pod.clone(),
        namespace: args.namespace.clone(),
        ip: args.pod_ip.to_string(),
    };
    let discovery =
        discovery::Discovery::start(controller.clone(), ident.clone(), node, args.discovery_wait);
    let (drainer, drain) = drain::channel();
    let ctx = Arc::new(Ctx {
        client_tls: ident.client_config(&[transport::ALPN_TCP])?,
        client_tls_h2: ident.client_config(&[transport::ALPN_H2])?,
        server_tls: ident.server_config(&[transport::ALPN_TCP, transport::ALPN_H2])?,
        peers: http::pool::H2Pool::default(),
        direct_h2: http::pool::H2Pool::default(),
        http1: http1_client(),
        detect_timeout: args.detect_timeout,
        opaque_ports: args.opaque_ports,
        identity: ident,
        discovery,
        metrics: metrics::Metrics::new()?,
        controller,
        workload: args.workload,
        source: arc_swap::ArcSwap::from_pointee(traffic::matching::Source {
            labels: Default::default(),
            namespace: args.namespace.clone(),
        }),
        access_log: args.access_log == "on",
        pod_ip: args.pod_ip,
        rate_limits: traffic::ratelimit::Policies::default(),
        drain,
    });
    tokio::spawn(own_labels(ctx.clone(), args.pod_ip));
    tokio::spawn({
        let ctx = ctx.clone();
        async move {
            loop {
                tokio::time::sleep(Duration::from_secs(1)).await;
                ctx.peers.reap();
                ctx.direct_h2.reap();
            }
        }
    });
    tracing::info!(%id, pod = %args.pod, "proxy starting");
    tokio::spawn(outbound::serve(outbound_l, ctx.clone()));
    tokio::spawn(inbound::serve_plain(inbound_l, ctx.clone()));
    tokio::spawn(inbound::serve_mtls(mtls_l, ctx.clone()));
    let admin_router = admin::admin(ctx.clone());
    tokio::spawn(async move {
        let _ = axum::serve(admin_l, admin_router).await;
    });
    tokio::spawn(async move {
        let _ = axum::serve(health_l, admin::health(ctx)).await;
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!(grace = ?args.drain_grace, "proxy draining");
    let left = drainer.run(args.drain_grace).await;
    tracing::info!(connections_cut = left, "proxy stopping");
    Ok(())
}
