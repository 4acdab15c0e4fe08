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

mod admin;
mod control;
mod discovery;
mod identity;
mod inbound;
mod metrics;
mod orig_dst;
mod outbound;
mod ports;
mod redirect;
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
    Run(RunArgs),
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
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    discovery_wait: Duration,
    /// Runtime worker threads.
    #[arg(long, env = "MESH_PROXY_WORKERS", default_value_t = 2)]
    workers: usize,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    api::duration::parse(s).map_err(|e| e.to_string())
}

/// What every connection handler shares.
pub struct Ctx {
    identity: Arc<common::tls::Identity>,
    discovery: Arc<discovery::Discovery>,
    metrics: metrics::Metrics,
    client_tls: Arc<rustls::ClientConfig>,
    server_tls: Arc<rustls::ServerConfig>,
    controller: control::ControllerAddr,
    workload: String,
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
            .block_on(run(args)),
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
    let ctx = Arc::new(Ctx {
        client_tls: ident.client_config(&[transport::ALPN_TCP])?,
        server_tls: ident.server_config(&[transport::ALPN_TCP])?,
        identity: ident,
        discovery,
        metrics: metrics::Metrics::new()?,
        controller,
        workload: args.workload,
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
    tracing::info!("proxy stopping");
    Ok(())
}
