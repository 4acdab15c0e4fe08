//! The node agent: runs the pods that the store holds, as a kubelet would.
//! Each pod is a network namespace on the node's bridge, with its hosts
//! file, the sidecar (after `mesh-proxy init`) when injected, and its
//! containers' commands; it reports phase and readiness back to the store
//! and restarts containers that exit (with backoff). Nothing here reads
//! the store's objects other than pods and services.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, OpenOptions};
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use api::inject::PROXY;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::time::Instant;

use super::StateDir;
use super::hosts::{self, HostEntry};
use super::netns::{self, Check};
use super::objects::Phase;
use super::service_proxy;
use super::store::{Key, PodRecord, Store};

mod spec;

/// First UID of pod proxies: each pod's proxy runs as its own UID, so that
/// only it can read its bootstrap token.
pub const PROXY_UID_BASE: u32 = 100_000;

/// What the agent needs to run pods.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Run id.
    pub id: String,
    /// State directory.
    pub state: StateDir,
    /// The `mesh-proxy` binary.
    pub proxy_bin: PathBuf,
    /// Trust anchors file (PEM).
    pub trust_anchors: PathBuf,
}

/// The image name that stands for the `mesh-proxy` binary: the node agent
/// runs binaries, not images.
pub const PROXY_IMAGE: &str = "mesh-proxy";

/// The PATH of every process in a pod.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs until the store is dropped.
pub async fn run(store: Arc<Store>, cfg: NodeConfig) {
    let mut changes = store.changes();
    let mut running: HashMap<Key, watch::Sender<bool>> = HashMap::new();
    let mut hosts_written: HashMap<Key, String> = HashMap::new();
    let mut rules_written: HashMap<Key, String> = HashMap::new();
    let mut targets_written = String::new();
    loop {
        let pods: Vec<PodRecord> = store.read(|s| s.pods.values().cloned().collect());
        // Hosts files first: a new pod's exists, current, before its task
        // starts processes that may resolve names.
        hosts_written.retain(|k, _| pods.iter().any(|p| p.namespace == k.0 && p.name == k.1));
        write_hosts(&store, &cfg.id, &pods, &mut hosts_written);
        rules_written.retain(|k, _| pods.iter().any(|p| p.namespace == k.0 && p.name == k.1));
        write_service_rules(&store, &cfg.id, &pods, &mut rules_written).await;
        for p in &pods {
            let key = (p.namespace.clone(), p.name.clone());
            match running.get(&key) {
                None => {
                    let (tx, rx) = watch::channel(p.phase == Phase::Terminating);
                    running.insert(key, tx);
                    tokio::spawn(pod_task(store.clone(), cfg.clone(), p.clone(), rx));
                }
                Some(stop) if p.phase == Phase::Terminating => {
                    stop.send_replace(true);
                }
                Some(_) => {}
            }
        }
        running.retain(|k, _| pods.iter().any(|p| p.namespace == k.0 && p.name == k.1));
        if let Err(e) = super::scrape::write(&cfg.state.0, &pods, &mut targets_written) {
            tracing::warn!(error = %e, "writing the Prometheus targets");
        }
        if changes.changed().await.is_err() {
            return;
        }
    }
}

fn hosts_dir(ns: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(ns)
}

/// Rewrites hosts files whose content changed. In place: `ip netns exec`
/// bind-mounts the file, so replacing it would not be seen.
fn write_hosts(store: &Store, id: &str, pods: &[PodRecord], written: &mut HashMap<Key, String>) {
    let services = store.read(|s| {
        s.services
            .iter()
            .map(|((ns, name), (_, ip))| (name.clone(), ns.clone(), IpAddr::V4(*ip)))
            .collect::<Vec<_>>()
    });
    let entries: Vec<HostEntry<'_>> = services
        .iter()
        .map(|(name, ns, ip)| HostEntry {
            name,
            namespace: ns,
            ip: *ip,
        })
        .collect();
    for p in pods.iter().filter(|p| p.phase != Phase::Terminating) {
        let key = (p.namespace.clone(), p.name.clone());
        let text = hosts::render(&p.name, IpAddr::V4(p.ip), &p.namespace, &entries);
        if written.get(&key) == Some(&text) {
            continue;
        }
        let dir = hosts_dir(&netns::pod_ns(id, p.seq));
        if fs::create_dir_all(&dir).is_ok() && fs::write(dir.join("hosts"), &text).is_ok() {
            written.insert(key, text);
        }
    }
}

/// Rewrites the Service rules of running pods whose rules changed (only
/// once running: after `mesh-proxy init`, whose rules come first).
async fn write_service_rules(
    store: &Store,
    id: &str,
    pods: &[PodRecord],
    written: &mut HashMap<Key, String>,
) {
    let rules = service_proxy::rules(&store.snapshots().borrow());
    for p in pods.iter().filter(|p| p.phase == Phase::Running) {
        let key = (p.namespace.clone(), p.name.clone());
        if written.get(&key) == Some(&rules) {
            continue;
        }
        let script = service_proxy::script(&rules);
        let argv = ["sh".to_string(), "-c".to_string(), script];
        match netns::command(&netns::pod_ns(id, p.seq), None, &argv)
            .output()
            .await
        {
            Ok(out) if out.status.success() => {
                written.insert(key, rules.clone());
            }
            Ok(out) => tracing::warn!(
                pod = %p.name,
                error = %String::from_utf8_lossy(&out.stderr).trim(),
                "Service rules not installed"
            ),
            Err(e) => tracing::warn!(pod = %p.name, error = %e, "Service rules not installed"),
        }
    }
}

struct Proc {
    name: String,
    log: PathBuf,
    argv: Vec<String>,
    run_as: Option<(u32, u32)>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    restart_at: Option<Instant>,
    failures: u32,
}

impl Proc {
    fn start(&mut self, ns: &str, workdir: &Path) {
        let log = OpenOptions::new().create(true).append(true).open(&self.log);
        let (out, err) = match log.and_then(|f| Ok((f.try_clone()?, f))) {
            Ok((a, b)) => (Stdio::from(a), Stdio::from(b)),
            Err(_) => (Stdio::null(), Stdio::null()),
        };
        let mut cmd = netns::command(ns, self.run_as, &self.argv);
        cmd.env_clear()
            .env("PATH", PATH)
            .env("HOME", workdir)
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .kill_on_drop(true);
        match cmd.spawn() {
            Ok(c) => {
                tracing::debug!(proc = %self.name, pid = ?c.id(), "started");
                self.child = Some(c);
            }
            Err(e) => {
                tracing::warn!(proc = %self.name, error = %e, "start failed");
                self.restart_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
    }

    /// Whether it exited; schedules its restart with backoff.
    fn reap(&mut self) -> bool {
        let Some(c) = &mut self.child else {
            return false;
        };
        match c.try_wait() {
            Ok(Some(status)) => {
                tracing::info!(proc = %self.name, %status, "exited");
                self.child = None;
                self.failures += 1;
                let delay = Duration::from_millis(500) * 2u32.pow(self.failures.min(6));
                self.restart_at = Some(Instant::now() + delay.min(Duration::from_secs(30)));
                true
            }
            _ => false,
        }
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        if let Some(pid) = self.child.as_ref().and_then(Child::id) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(i32::try_from(pid).unwrap_or(0)),
                sig,
            );
        }
    }
}

fn prepare_dirs(
    dir: &Path,
    proxy_uid: Option<u32>,
    app_uid: Option<(u32, u32)>,
    token: &str,
) -> anyhow::Result<PathBuf> {
    let work = dir.join("work");
    fs::create_dir_all(&work)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755))?;
    if let Some((u, g)) = app_uid {
        nix::unistd::chown(&work, Some(u.into()), Some(g.into()))?;
    }
    let proxy_dir = dir.join("proxy");
    if let Some(uid) = proxy_uid {
        fs::create_dir_all(&proxy_dir)?;
        fs::set_permissions(&proxy_dir, fs::Permissions::from_mode(0o700))?;
        let token_file = proxy_dir.join("token");
        fs::write(&token_file, token)?;
        fs::set_permissions(&token_file, fs::Permissions::from_mode(0o400))?;
        nix::unistd::chown(&token_file, Some(uid.into()), Some(uid.into()))?;
        nix::unistd::chown(&proxy_dir, Some(uid.into()), Some(uid.into()))?;
    }
    Ok(work)
}

/// The directories of the pod (`dir`) that stand for the spec's volumes:
/// `proxy/` holds the bootstrap token (the proxy's UID only, written by
/// [`prepare_dirs`]) and `anchors/` the trust anchors.
fn volumes(p: &PodRecord, dir: &Path) -> BTreeMap<String, PathBuf> {
    p.spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| {
            let path = match spec::volume_kind(v)? {
                spec::VolumeKind::Token => dir.join("proxy"),
                spec::VolumeKind::Anchors => dir.join("anchors"),
            };
            Some((v.name.clone(), path))
        })
        .collect()
}

/// What the runtime adds to the proxy: its log level, the proxy settings
/// given to `meshctl local up`, and a profiler to run it under.
fn proxy_extras(r: &mut spec::Runnable) {
    r.env.push((
        "RUST_LOG".into(),
        std::env::var("MESH_PROXY_LOG").unwrap_or_else(|_| "info".into()),
    ));
    for var in [
        "MESH_PROXY_WORKERS",
        "MESH_DETECT_TIMEOUT",
        "MESH_OPAQUE_PORTS",
        "MESH_ACCESS_LOG",
        "MESH_DRAIN_GRACE",
    ] {
        if let Ok(v) = std::env::var(var) {
            r.env.push((var.into(), v));
        }
    }
    // `cargo xtask bench` runs sidecars under callgrind: a command line
    // such as `valgrind --tool=callgrind`.
    if let Ok(w) = std::env::var("MESH_PROXY_WRAPPER") {
        let mut argv: Vec<String> = w.split_whitespace().map(str::to_string).collect();
        argv.append(&mut r.argv);
        r.argv = argv;
    }
}

async fn setup(cfg: &NodeConfig, p: &PodRecord, ns: &str) -> anyhow::Result<Vec<Proc>> {
    let node = netns::node_ns(&cfg.id);
    netns::create_pod(&node, ns, &format!("v{}", p.seq), p.ip).await?;
    let hd = hosts_dir(ns);
    fs::create_dir_all(&hd)?;
    // Unknown names fail at once instead of waiting for a DNS server that
    // is not there.
    fs::write(
        hd.join("resolv.conf"),
        "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
    )?;
    // The hosts file is the agent loop's alone (written before this task
    // was spawned): a second writer here could overwrite a newer one.
    let dir = cfg.state.pod_dir(&p.namespace, &p.name);
    let facts = spec::PodFacts {
        name: &p.name,
        namespace: &p.namespace,
        ip: p.ip,
        service_account: &p.service_account,
    };
    let volumes = volumes(p, &dir);
    let runnables = spec::runnables(&p.spec, &facts, &volumes, &cfg.proxy_bin);
    // The token is the proxy's alone; the work directory the app's.
    let proxy_uid = runnables
        .iter()
        .find(|r| r.name == PROXY)
        .and_then(|r| r.run_as)
        .map(|(u, _)| u);
    let app_uid = runnables
        .iter()
        .find(|r| r.name != PROXY && !r.init)
        .and_then(|r| r.run_as);
    let work = prepare_dirs(&dir, proxy_uid, app_uid, &p.token)?;
    let anchors_volume = p
        .spec
        .volumes
        .iter()
        .flatten()
        .any(|v| spec::volume_kind(v) == Some(spec::VolumeKind::Anchors));
    if anchors_volume {
        let anchors = dir.join("anchors");
        fs::create_dir_all(&anchors)?;
        fs::copy(&cfg.trust_anchors, anchors.join("ca.crt"))?;
    }
    let base_env = [
        ("POD_NAME".to_string(), p.name.clone()),
        ("POD_NAMESPACE".to_string(), p.namespace.clone()),
        ("POD_IP".to_string(), p.ip.to_string()),
    ];
    let mut procs = Vec::new();
    for mut r in runnables {
        if r.init {
            let out = netns::command(ns, r.run_as, &r.argv)
                .envs(base_env.iter().cloned().chain(r.env.iter().cloned()))
                .output()
                .await?;
            anyhow::ensure!(
                out.status.success(),
                "init container {}: {}",
                r.name,
                String::from_utf8_lossy(&out.stderr).trim()
            );
            continue;
        }
        // The proxy's log keeps its name: `meshctl local logs -c proxy`.
        let name = if r.name == PROXY {
            proxy_extras(&mut r);
            "proxy".to_string()
        } else {
            r.name.clone()
        };
        procs.push(Proc {
            log: dir.join(format!("{name}.log")),
            name,
            argv: r.argv,
            run_as: r.run_as,
            env: base_env.iter().cloned().chain(r.env).collect(),
            child: None,
            restart_at: None,
            failures: 0,
        });
    }
    tracing::debug!(pod = %p.name, work = %work.display(), "pod set up");
    Ok(procs)
}

fn set_status(store: &Store, key: &Key, phase: Phase, ready: bool, restarts: u32, message: &str) {
    store.write(|s| {
        let Some(p) = s.pods.get_mut(key) else {
            return ((), false);
        };
        if p.phase == Phase::Terminating && phase != Phase::Terminating {
            return ((), false);
        }
        let changed =
            p.phase != phase || p.ready != ready || p.restarts != restarts || p.message != message;
        p.phase = phase;
        p.ready = ready;
        p.restarts = restarts;
        p.message = message.to_string();
        ((), changed)
    });
}

async fn pod_task(
    store: Arc<Store>,
    cfg: NodeConfig,
    p: PodRecord,
    mut stop: watch::Receiver<bool>,
) {
    let key = (p.namespace.clone(), p.name.clone());
    let ns = netns::pod_ns(&cfg.id, p.seq);
    let workdir = cfg.state.pod_dir(&p.namespace, &p.name).join("work");
    let mut procs = if *stop.borrow() {
        Vec::new()
    } else {
        match setup(&cfg, &p, &ns).await {
            Ok(procs) => procs,
            Err(e) => {
                tracing::error!(pod = %p.name, error = %e, "pod setup failed");
                set_status(&store, &key, Phase::Failed, false, 0, &format!("{e:#}"));
                Vec::new()
            }
        }
    };
    let meshed = p.meshed;
    let mut checks = Vec::new();
    if meshed {
        checks.push(Check::HttpOk(
            SocketAddr::new(IpAddr::V4(p.ip), 15020),
            "/ready",
        ));
    }
    for c in p.spec.containers.iter().filter(|c| c.name != PROXY) {
        for port in c.ports.iter().flatten() {
            if let Ok(port) = u16::try_from(port.container_port) {
                checks.push(Check::Tcp(SocketAddr::new(IpAddr::V4(p.ip), port)));
            }
        }
    }
    // The sidecar starts first; the app waits (bounded) until it is ready,
    // so that the app's first connections are already meshed.
    if let Some(proxy) = procs.iter_mut().find(|x| x.name == "proxy" && meshed) {
        proxy.start(&ns, &workdir);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline && !*stop.borrow() {
            if netns::probe(&ns, vec![checks[0].clone()]).await == [true] {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    for x in procs
        .iter_mut()
        .filter(|x| x.child.is_none() && !(x.name == "proxy" && meshed))
    {
        x.start(&ns, &workdir);
    }
    let mut restarts = 0;
    while !procs.is_empty() && !*stop.borrow() {
        let now = Instant::now();
        for x in &mut procs {
            if x.reap() {
                restarts += 1;
            }
            if x.child.is_none() && x.restart_at.is_some_and(|t| t <= now) {
                x.restart_at = None;
                x.start(&ns, &workdir);
            }
        }
        let all_running = procs.iter().all(|x| x.child.is_some());
        let ready = all_running && netns::probe(&ns, checks.clone()).await.iter().all(|ok| *ok);
        let msg = if all_running {
            ""
        } else {
            "a container exited; restarting with backoff"
        };
        set_status(&store, &key, Phase::Running, ready, restarts, msg);
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(if ready { 1000 } else { 200 })) => {}
            _ = stop.changed() => {}
        }
    }
    if !*stop.borrow() {
        // Setup failed: stay reported as Failed until deleted.
        while stop.changed().await.is_ok() && !*stop.borrow() {}
    }
    // Termination: SIGTERM, a grace period, then SIGKILL and cleanup.
    set_status(&store, &key, Phase::Terminating, false, restarts, "");
    for x in &procs {
        x.signal(nix::sys::signal::Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    for x in &mut procs {
        if let Some(c) = &mut x.child {
            let _ = tokio::time::timeout_at(deadline, c.wait()).await;
        }
        x.signal(nix::sys::signal::Signal::SIGKILL);
    }
    netns::delete(&ns).await;
    tracing::info!(pod = %p.name, "pod removed");
    store.write(|s| {
        let removed = s.pods.remove(&key);
        if let Some(r) = &removed {
            s.pod_ips.release(r.ip);
        }
        ((), removed.is_some())
    });
}
