//! `mesh-proxy`: the sidecar. `init` installs traffic redirection in the
//! pod's network namespace; `run` is the data plane ([`mesh_proxy::run`]).
//! This file only reads flags.

use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};

use mesh_proxy::{Config, Settings, redirect};

/// mimalloc instead of glibc's malloc: faster on the request path's small
/// allocations, and it gives freed pages back to the kernel shortly after
/// a load peak, where glibc keeps them (RSS stayed at its peak after a
/// flood of connections).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    /// Wait until the proxy in this pod is ready (a classic sidecar's
    /// postStart hook: kubelet starts the app after it).
    Wait {
        /// How long to wait before failing.
        #[arg(long, default_value = "120s", value_parser = api::duration::parse)]
        timeout: Duration,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// The controller's gRPC address, `host:port` (a name is resolved on
    /// each connect).
    #[arg(long, env = "MESH_CONTROLLER")]
    controller: String,
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
    /// Runtime worker threads. One (the default, as Linkerd's proxy) runs
    /// everything on the main thread, with no hand-offs between threads;
    /// more use a work-stealing pool.
    #[arg(long, env = "MESH_PROXY_WORKERS", default_value_t = 1)]
    workers: usize,
    /// How long a SIGTERM waits for open connections to finish (Istio's
    /// terminationDrainDuration).
    #[arg(long, env = "MESH_DRAIN_GRACE", default_value = "5s", value_parser = api::duration::parse)]
    drain_grace: Duration,
    /// The JSON access log on stdout: `on` or `off`.
    #[arg(long, env = "MESH_ACCESS_LOG", default_value = "on", value_parser = ["on", "off"])]
    access_log: String,
    /// The app's probes that kubelet sends through the proxy (JSON, from
    /// the injector).
    #[arg(long, env = "MESH_APP_PROBERS")]
    app_probers: Option<String>,
}

impl From<RunArgs> for Config {
    fn from(a: RunArgs) -> Self {
        Self {
            controller: a.controller,
            trust_domain: a.trust_domain,
            namespace: a.namespace,
            service_account: a.service_account,
            pod: a.pod,
            workload: a.workload,
            pod_ip: a.pod_ip,
            token_file: a.token_file,
            trust_anchors: a.trust_anchors,
            discovery_wait: a.discovery_wait,
            settings: Settings {
                detect_timeout: a.detect_timeout,
                opaque_ports: a.opaque_ports,
            },
            drain_grace: a.drain_grace,
            access_log: a.access_log == "on",
            app_probers: a.app_probers,
        }
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    common::logging::init("info");
    match cli.cmd {
        Cmd::Init(cfg) => cfg.apply(),
        Cmd::Wait { timeout } => mesh_proxy::wait::until_ready(timeout),
        Cmd::Run(args) => {
            raise_fd_limit();
            let runtime = match args.workers {
                0 | 1 => tokio::runtime::Builder::new_current_thread(),
                n => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(n);
                    b
                }
            }
            .enable_all()
            .on_thread_park(mesh_proxy::memory::on_park)
            .build()?;
            runtime.block_on(mesh_proxy::run(Config::from(*args)))
        }
    }
}

/// Each proxied connection takes two descriptors: the soft limit goes up
/// to the hard one, as Envoy's and Linkerd's images do, so that a busy
/// pod is not refused at 512 connections by a default of 1024.
fn raise_fd_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => {
            if let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
                tracing::warn!(soft, hard, error = %e, "could not raise the open files limit");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "could not read the open files limit"),
    }
}
