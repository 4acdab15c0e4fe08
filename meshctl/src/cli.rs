//! Command-line definitions (the logic lives in [`crate::commands`]).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// The mesh's command line.
#[derive(Parser, Debug)]
#[command(
    name = "meshctl",
    version,
    about = "Service mesh CLI and local runtime"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Whether this is the runtime's daemon (it logs more).
    pub fn is_daemon(&self) -> bool {
        matches!(&self.command, Command::Local(l) if matches!(l.command, LocalCommand::Daemon(_)))
    }
}

/// Top-level commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// The local runtime: the mesh on this host, in network namespaces.
    Local(LocalArgs),
    /// Start the local runtime with a demo application and send traffic.
    Demo(DemoArgs),
    /// Check manifests (Kubernetes and mesh resources) without applying them.
    Validate(ValidateArgs),
    /// Add the mesh's sidecar to the pod templates of manifests (Pods,
    /// Deployments, StatefulSets, DaemonSets, ReplicaSets, Jobs, CronJobs);
    /// other kinds pass through. Prints the result; stderr says what was
    /// injected or skipped and why.
    Inject(InjectArgs),
    /// Find problems across resources: the files given, the local
    /// runtime's state, or both (exit 1: errors, 2: warnings only).
    Analyze(AnalyzeArgs),
    /// Each proxy's config sync state with the controller: what was sent,
    /// acknowledged or refused (like `istioctl proxy-status`).
    ProxyStatus(ProxyStatusArgs),
    /// What one proxy holds: its routes, backends, endpoints with their
    /// circuits, certificate and config version (like `istioctl
    /// proxy-config`).
    ProxyConfig(ProxyConfigArgs),
    /// Authorization: `authz check POD` lists the AuthorizationPolicies
    /// that apply to a pod, in the order its proxy evaluates them.
    Authz(AuthzArgs),
    /// Why a request from a pod goes where it goes and is let in or
    /// refused: the route, destination, subset and endpoints; the
    /// PeerAuthentication mode at the destination; the authorization
    /// decision with the policy and rule that decided it.
    Explain(ExplainArgs),
    /// Success rate, requests per second, latency percentiles, TCP
    /// connections and the share of mTLS per workload or pod, over a
    /// window, from the proxies' metrics (as `linkerd viz stat`).
    Stat(StatArgs),
    /// Which workloads talk to which, with their identities and whether
    /// over mTLS, from the proxies' metrics (as `linkerd viz edges`).
    Edges(EdgesArgs),
    /// Live requests of a workload's pods, from their proxies (headers
    /// and outcome, never bodies), as `linkerd viz tap`.
    Tap(TapArgs),
    /// The busiest paths of a workload's pods over a while, from the same
    /// live requests, as `linkerd viz top`.
    Top(TapArgs),
    /// A web page of the mesh: the service topology with each link's
    /// rate, errors, p99 and mTLS; each workload's RED charts; each
    /// proxy's sync state and certificate expiry. Served on loopback from
    /// the proxies' metrics, as `stat` reads them.
    Dashboard(DashboardArgs),
    /// Check a Kubernetes cluster: ready for the mesh (--pre), the mesh
    /// healthy, the proxies in sync (--proxy); exit 1 when a check fails.
    Check(crate::commands::check::CheckArgs),
    /// Install the mesh on a Kubernetes cluster (server-side apply of the
    /// CRDs, the controller, its RBAC and webhooks), then wait until it
    /// is ready.
    Install(crate::install::InstallArgs),
    /// Upgrade an installation: the same objects, applied again, with the
    /// cluster's trust anchors and issuer kept.
    Upgrade(crate::install::InstallArgs),
    /// Remove the mesh from a Kubernetes cluster; workloads stay, and the
    /// pods that still carry a sidecar are named.
    Uninstall(crate::install::UninstallArgs),
}

/// `inject`.
#[derive(Args, Debug)]
pub struct InjectArgs {
    /// Manifest file, directory (its *.yaml/*.yml files) or `-` for stdin.
    #[arg(
        short = 'f',
        long = "filename",
        required_unless_present = "workload",
        conflicts_with = "workload"
    )]
    pub files: Vec<PathBuf>,
    /// A live workload to patch instead: `deploy/NAME`, `sts/NAME`,
    /// `ds/NAME` or `cronjob/NAME` (its pods are then replaced by a
    /// rollout). The proxy image, trust domain and sidecar kind are the
    /// installation's.
    pub workload: Option<String>,
    /// The live workload's namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// With a live workload: print the patched object, change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// The cluster (with a live workload).
    #[command(flatten)]
    pub kube: crate::k8s::KubeArgs,
    /// The proxy image (it also runs the redirection init container).
    #[arg(long, default_value = api::inject::DEFAULT_IMAGE)]
    pub proxy_image: String,
    /// The controller's address, as proxies reach it.
    #[arg(long, default_value = api::inject::DEFAULT_CONTROLLER)]
    pub controller: String,
    /// The mesh's trust domain.
    #[arg(long, default_value = api::spiffe::DEFAULT_TRUST_DOMAIN)]
    pub trust_domain: String,
    /// The proxy's UID.
    #[arg(long, default_value_t = 1337)]
    pub proxy_uid: i64,
    /// Make the proxy a native sidecar (an init container with
    /// `restartPolicy: Always`; Kubernetes 1.29 and later).
    #[arg(long)]
    pub native_sidecars: bool,
}

/// `proxy-config`.
#[derive(Args, Debug)]
pub struct ProxyConfigArgs {
    /// `[SECTION] POD`: the section (listeners, routes, clusters,
    /// endpoints, secrets or all; default all), then the pod's name or
    /// `deploy/NAME` for a ready pod of a Deployment.
    #[arg(num_args = 1..=2, required = true, value_names = ["SECTION", "POD"])]
    pub targets: Vec<String>,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// State.
    #[command(flatten)]
    pub state: StateArgs,
    /// The cluster (when the local runtime does not run, or one is named).
    #[command(flatten)]
    pub kube: crate::k8s::KubeArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// Which pods `stat` and `edges` read, and how they print.
#[derive(Args, Debug)]
pub struct VizScope {
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Every namespace.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// State.
    #[command(flatten)]
    pub state: StateArgs,
    /// The cluster (when the local runtime does not run, or one is named).
    #[command(flatten)]
    pub kube: crate::k8s::KubeArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
    /// Read a Prometheus that scrapes the proxies (http://HOST:PORT)
    /// instead of the proxies themselves; `--window` is then the PromQL
    /// range (give at least four scrape intervals, e.g. 1m).
    #[arg(long)]
    pub prometheus: Option<String>,
}

/// `stat`.
#[derive(Args, Debug)]
pub struct StatArgs {
    /// `deploy`, `pod`, or `route` (the routes of the services the pods
    /// call, as their VirtualServices or ServiceProfiles name them).
    pub resource: String,
    /// How long to measure (two scrapes this far apart).
    #[arg(long, default_value = "10s")]
    pub window: String,
    /// Which pods.
    #[command(flatten)]
    pub scope: VizScope,
}

/// `dashboard`.
#[derive(Args, Debug)]
pub struct DashboardArgs {
    /// Where to serve the page.
    #[arg(long, default_value = "127.0.0.1:50750")]
    pub address: std::net::SocketAddr,
    /// How often the proxies are read (the rates are over this window).
    #[arg(long, default_value = "2s")]
    pub interval: String,
    /// Only this namespace (default: every namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// State.
    #[command(flatten)]
    pub state: StateArgs,
    /// The cluster (when the local runtime does not run, or one is named).
    #[command(flatten)]
    pub kube: crate::k8s::KubeArgs,
}

/// `tap` and `top`.
#[derive(Args, Debug)]
pub struct TapArgs {
    /// `deploy/NAME`, `pod/NAME` or a pod's name.
    pub target: String,
    /// Only this method.
    #[arg(long)]
    pub method: Option<String>,
    /// Only paths starting so.
    #[arg(long)]
    pub path: Option<String>,
    /// Only this status.
    #[arg(long)]
    pub status: Option<u16>,
    /// Only this authority.
    #[arg(long)]
    pub authority: Option<String>,
    /// Only `inbound` (served by the pods) or `outbound` (sent by them).
    #[arg(long)]
    pub direction: Option<String>,
    /// Stop after this many requests.
    #[arg(long, default_value_t = 100)]
    pub max: usize,
    /// Stop after this long.
    #[arg(long, default_value = "10s")]
    pub duration: String,
    /// Which pods.
    #[command(flatten)]
    pub scope: VizScope,
}

/// `edges`.
#[derive(Args, Debug)]
pub struct EdgesArgs {
    /// `deploy` or `pod`.
    pub resource: String,
    /// Which pods.
    #[command(flatten)]
    pub scope: VizScope,
}

/// `authz`.
#[derive(Args, Debug)]
pub struct AuthzArgs {
    /// What to do.
    #[command(subcommand)]
    pub command: AuthzCommand,
}

/// `authz` subcommands.
#[derive(Subcommand, Debug)]
pub enum AuthzCommand {
    /// The AuthorizationPolicies that apply to a pod, in evaluation order
    /// (CUSTOM, DENY, ALLOW, then AUDIT), and what happens to a request
    /// that none of them matches.
    Check(AuthzCheckArgs),
}

/// `authz check`.
#[derive(Args, Debug)]
pub struct AuthzCheckArgs {
    /// The pod's name, or `deploy/NAME` for a ready pod of a Deployment.
    pub pod: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// State.
    #[command(flatten)]
    pub state: StateArgs,
    /// The cluster (when the local runtime does not run, or one is named).
    #[command(flatten)]
    pub kube: crate::k8s::KubeArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// `explain`.
#[derive(Args, Debug)]
pub struct ExplainArgs {
    /// The client: a pod's name, or `deploy/NAME` for a ready pod of a
    /// Deployment.
    #[arg(long)]
    pub from: String,
    /// The URL it requests (`http://` when no scheme is given).
    pub url: String,
    /// The method.
    #[arg(short = 'X', long = "request", default_value = "GET")]
    pub method: String,
    /// A header, `name: value` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The client's namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// State.
    #[command(flatten)]
    pub state: StateArgs,
    /// The cluster (when the local runtime does not run, or one is named).
    #[command(flatten)]
    pub kube: crate::k8s::KubeArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// `proxy-status`.
#[derive(Args, Debug)]
pub struct ProxyStatusArgs {
    /// Only proxies of this namespace.
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// State.
    #[command(flatten)]
    pub state: StateArgs,
    /// The cluster (when the local runtime does not run, or one is named).
    #[command(flatten)]
    pub kube: crate::k8s::KubeArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// `analyze`.
#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// Manifest files or directories (default: only the runtime's state).
    #[arg(short = 'f', long = "filename")]
    pub files: Vec<PathBuf>,
    /// Ignore the local runtime and any cluster: the files alone.
    #[arg(long)]
    pub no_runtime: bool,
    /// The cluster whose objects are analyzed, when the local runtime
    /// does not run (or when one is named).
    #[command(flatten)]
    pub kube: crate::k8s::KubeArgs,
    /// State.
    #[command(flatten)]
    pub state: StateArgs,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// `validate`.
#[derive(Args, Debug)]
pub struct ValidateArgs {
    /// Manifest file, directory (its *.yaml/*.yml files, recursively) or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// Where the local runtime keeps its state.
#[derive(Args, Debug, Clone)]
pub struct StateArgs {
    /// State directory (default: $MESHCTL_LOCAL_DIR, else /var/lib/meshctl/local for root).
    #[arg(long, global = true)]
    pub state_dir: Option<PathBuf>,
}

/// `meshctl local`.
#[derive(Args, Debug)]
pub struct LocalArgs {
    /// State.
    #[command(flatten)]
    pub state: StateArgs,
    /// Subcommand.
    #[command(subcommand)]
    pub command: LocalCommand,
}

/// `meshctl local ...`.
#[derive(Subcommand, Debug)]
pub enum LocalCommand {
    /// Start the runtime in the background; returns when it is ready.
    Up(UpArgs),
    /// Stop the runtime and remove every namespace, interface and process it made.
    Down,
    /// Create or update the objects of manifest files.
    Apply(FileArgs),
    /// Delete the objects of manifest files.
    Delete(FileArgs),
    /// List pods or services.
    Get(GetArgs),
    /// Run a command inside a pod's network namespace.
    Exec(ExecArgs),
    /// Print a pod's container or proxy log.
    Logs(LogsArgs),
    /// Stop or start the controller (to see the data plane without it).
    Controller(ControllerArgs),
    /// Run the daemon in the foreground (started by `up`).
    #[command(hide = true)]
    Daemon(UpArgs),
}

/// `local up`.
#[derive(Args, Debug, Clone)]
pub struct UpArgs {
    /// Lifetime of workload certificates (Istio durations: 24h, 30s).
    #[arg(long, default_value = "24h")]
    pub cert_lifetime: String,
    /// How often the controller fetches every RequestAuthentication
    /// `jwksUri` again (a rotated key is taken within it).
    #[arg(long, default_value = "20m")]
    pub jwks_refresh_interval: String,
    /// Bring your own trust anchor: root certificate (PEM); needs --root-key.
    #[arg(long, requires = "root_key")]
    pub root_cert: Option<PathBuf>,
    /// The root's private key (PEM).
    #[arg(long, requires = "root_cert")]
    pub root_key: Option<PathBuf>,
}

/// `-f FILE...`.
#[derive(Args, Debug)]
pub struct FileArgs {
    /// Manifest file, directory (its *.yaml/*.yml files) or `-` for stdin.
    #[arg(short = 'f', long = "filename", required = true)]
    pub files: Vec<PathBuf>,
}

/// What `get` lists.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// Pods.
    #[value(alias = "pod", alias = "po")]
    Pods,
    /// Services.
    #[value(alias = "service", alias = "svc")]
    Services,
}

/// Output formats.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// A table.
    #[default]
    Table,
    /// JSON.
    Json,
    /// YAML (for validate: what each document becomes).
    Yaml,
}

/// `local get`.
#[derive(Args, Debug)]
pub struct GetArgs {
    /// pods or services.
    pub resource: Resource,
    /// Namespace, as kubectl's `-n`.
    #[arg(
        short,
        long,
        default_value = "default",
        conflicts_with = "all_namespaces"
    )]
    pub namespace: String,
    /// Every namespace, as kubectl's `-A`.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t)]
    pub output: Output,
}

/// `local exec`.
#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Pod name, or `deploy/NAME` for a ready pod of a Deployment.
    pub pod: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// The command.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

/// `local logs`.
#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Pod name, or `deploy/NAME`.
    pub pod: String,
    /// Namespace.
    #[arg(short, long, default_value = "default")]
    pub namespace: String,
    /// Container name, or `proxy` for the sidecar (default: the first container).
    #[arg(short, long)]
    pub container: Option<String>,
}

/// `local controller stop|start`.
#[derive(Args, Debug)]
pub struct ControllerArgs {
    /// `stop` or `start`.
    #[arg(value_parser = ["stop", "start"])]
    pub action: String,
}

/// `demo`.
#[derive(Args, Debug)]
pub struct DemoArgs {
    /// State.
    #[command(flatten)]
    pub state: StateArgs,
    /// Requests to send through the demo.
    #[arg(long, default_value_t = 20)]
    pub requests: u32,
}
