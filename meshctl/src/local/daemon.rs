//! The runtime's daemon (`meshctl local daemon`, started by `local up`):
//! makes the node namespace, keeps the CA material, supervises the
//! controller, runs the store, reconcilers and node agent, serves the API,
//! and removes everything it made when told to stop.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use tokio::process::Child;
use tokio::sync::{Mutex, Notify};

use super::node::{self, NodeConfig};
use super::objects::Phase;
use super::server::{self, Api};
use super::store::Store;
use super::{StateDir, find_binary, ipam, netns, reconcile, sweep};

/// Port of the controller's gRPC endpoint (Istio's istiod port).
pub const CONTROLLER_PORT: u16 = 15012;

/// Daemon settings (from `local up`).
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// State directory.
    pub state: StateDir,
    /// Lifetime of workload certificates.
    pub cert_lifetime: String,
    /// How often the controller fetches JWKS again.
    pub jwks_refresh_interval: String,
}

/// The controller process, restarted when it dies unless stopped on
/// purpose.
pub struct Controller {
    argv: Vec<String>,
    ns: String,
    log: PathBuf,
    wanted: AtomicBool,
    child: Mutex<Option<Child>>,
    running: AtomicBool,
}

impl Controller {
    /// Whether it runs now.
    pub fn running(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// Stops it and keeps it stopped.
    pub async fn stop(&self) {
        self.wanted.store(false, Ordering::Relaxed);
        if let Some(mut c) = self.child.lock().await.take() {
            let _ = c.kill().await;
        }
        self.running.store(false, Ordering::Relaxed);
    }

    /// Lets the supervisor start it again.
    pub fn start(&self) {
        self.wanted.store(true, Ordering::Relaxed);
    }

    async fn supervise(self: Arc<Self>) {
        loop {
            {
                let mut child = self.child.lock().await;
                if let Some(c) = child.as_mut()
                    && let Ok(Some(status)) = c.try_wait()
                {
                    tracing::warn!(%status, "controller exited");
                    *child = None;
                }
                if child.is_none() && self.wanted.load(Ordering::Relaxed) {
                    *child = self.spawn();
                }
                self.running.store(child.is_some(), Ordering::Relaxed);
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    fn spawn(&self) -> Option<Child> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .ok()?;
        let err = log.try_clone().ok()?;
        netns::command(&self.ns, None, &self.argv)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .inspect_err(|e| tracing::error!(error = %e, "starting the controller"))
            .ok()
    }
}

/// Checks that unprivileged pod users can reach files under `dir`.
fn check_traversable(dir: &Path) -> anyhow::Result<()> {
    for a in dir.ancestors().skip(1) {
        if let Ok(m) = std::fs::metadata(a)
            && m.permissions().mode() & 0o001 == 0
        {
            anyhow::bail!(
                "{} is not reachable by other users ({} has mode {:o}); pods run as their own users: choose a --state-dir outside it",
                dir.display(),
                a.display(),
                m.permissions().mode() & 0o777
            );
        }
    }
    Ok(())
}

/// Creates the root and issuer on first start.
fn ensure_ca(state: &StateDir) -> anyhow::Result<PathBuf> {
    let dir = state.ca();
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let (root_cert, root_key) = (dir.join("root.pem"), dir.join("root.key"));
    let td = api::spiffe::DEFAULT_TRUST_DOMAIN;
    if !root_cert.exists() {
        let root = common::pki::generate_root(td)?;
        write_secret(&root_key, &root.key)?;
        std::fs::write(&root_cert, &root.cert)?;
    }
    let (issuer_cert, issuer_key) = (dir.join("issuer.pem"), dir.join("issuer.key"));
    if !issuer_cert.exists() {
        let root = common::pki::PemPair {
            cert: std::fs::read_to_string(&root_cert)?,
            key: std::fs::read_to_string(&root_key)
                .context("the root key is needed to make an issuer")?,
        };
        let issuer = common::pki::generate_issuer(&root, td)?;
        write_secret(&issuer_key, &issuer.key)?;
        std::fs::write(&issuer_cert, &issuer.cert)?;
    }
    std::fs::set_permissions(&root_cert, std::fs::Permissions::from_mode(0o644))?;
    Ok(root_cert)
}

/// Copies `mesh-proxy` into the state directory, world-readable: sidecars
/// run as unprivileged users that may not reach the build tree (a clone
/// under /root, say), as an image would carry its binary.
fn install_proxy(state: &StateDir) -> anyhow::Result<PathBuf> {
    let src = find_binary("mesh-proxy")?;
    let dir = state.0.join("bin");
    std::fs::create_dir_all(&dir)?;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755))?;
    let dst = dir.join("mesh-proxy");
    let tmp = dir.join("mesh-proxy.tmp");
    std::fs::copy(&src, &tmp).with_context(|| format!("copying {}", src.display()))?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755))?;
    std::fs::rename(&tmp, &dst)?;
    Ok(dst)
}

fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(())
}

fn random_id() -> String {
    format!("{:06x}", fastrand::u32(..0x100_0000))
}

/// Runs the daemon until `POST /shutdown` or SIGTERM.
pub async fn run(cfg: DaemonConfig) -> anyhow::Result<()> {
    anyhow::ensure!(
        nix::unistd::geteuid().is_root(),
        "the local runtime needs root (network namespaces, iptables)"
    );
    let state = cfg.state.clone();
    std::fs::create_dir_all(&state.0)?;
    std::fs::set_permissions(&state.0, std::fs::Permissions::from_mode(0o755))?;
    check_traversable(&state.0)?;
    let swept = sweep::sweep().await;
    if !swept.is_empty() {
        tracing::info!(?swept, "removed stale runs");
    }
    let id = random_id();
    sweep::register(&id, &state.0)?;
    let result = serve(&cfg, &id).await;
    sweep::remove_run(&id).await;
    sweep::unregister(&id);
    let _ = std::fs::remove_file(state.socket());
    tracing::info!(%id, "local runtime stopped");
    result
}

async fn serve(cfg: &DaemonConfig, id: &str) -> anyhow::Result<()> {
    let state = &cfg.state;
    let anchors = ensure_ca(state)?;
    let node_ns = netns::node_ns(id);
    netns::create_node(&node_ns).await?;
    let ctl_addr = SocketAddr::new(ipam::GATEWAY.into(), CONTROLLER_PORT);
    let ca = state.ca();
    let controller = Arc::new(Controller {
        argv: vec![
            find_binary("mesh-controller")?.display().to_string(),
            format!("--listen={ctl_addr}"),
            format!("--trust-anchors={}", anchors.display()),
            format!("--issuer-cert={}", ca.join("issuer.pem").display()),
            format!("--issuer-key={}", ca.join("issuer.key").display()),
            format!("--local-api={}", state.socket().display()),
            format!("--cert-lifetime={}", cfg.cert_lifetime),
            format!("--jwks-refresh-interval={}", cfg.jwks_refresh_interval),
            format!("--debug-socket={}", state.controller_socket().display()),
            "--instance=mesh-controller".to_string(),
        ],
        ns: node_ns.clone(),
        log: state.controller_log(),
        wanted: AtomicBool::new(true),
        child: Mutex::new(None),
        running: AtomicBool::new(false),
    });
    let store = Store::new();
    store.write(|s| {
        s.injection.controller = ctl_addr.to_string();
        ((), false)
    });
    let node_cfg = NodeConfig {
        id: id.to_string(),
        state: state.clone(),
        proxy_bin: install_proxy(state)?,
        trust_anchors: anchors,
    };
    let _ = std::fs::remove_file(state.socket());
    let listener = tokio::net::UnixListener::bind(state.socket())
        .with_context(|| format!("binding {}", state.socket().display()))?;
    tokio::spawn(controller.clone().supervise());
    tokio::spawn(reconcile::run(store.clone()));
    tokio::spawn(node::run(store.clone(), node_cfg));
    let shutdown = Arc::new(Notify::new());
    let api = Arc::new(Api {
        store: store.clone(),
        id: id.to_string(),
        controller: controller.clone(),
        shutdown: shutdown.clone(),
    });
    tracing::info!(%id, node = %node_ns, socket = %state.socket().display(), "local runtime up");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let ctl = controller.clone();
    // The controller's watch never ends by itself: stop the controller
    // first so that the server can drain.
    let stop = async move {
        tokio::select! {
            _ = shutdown.notified() => {}
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        ctl.stop().await;
    };
    axum::serve(listener, server::router(api))
        .with_graceful_shutdown(stop)
        .await?;
    // Stop making pods, then let every pod terminate (bounded).
    store.write(|s| {
        s.deployments.clear();
        for p in s.pods.values_mut() {
            p.phase = Phase::Terminating;
            p.ready = false;
        }
        ((), true)
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while store.read(|s| !s.pods.is_empty()) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    controller.stop().await;
    Ok(())
}
