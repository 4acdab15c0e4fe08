//! The local runtime: a Kubernetes-shaped mesh on one Linux host.
//!
//! An object store with small reconcilers ([`store`], [`reconcile`]) and a
//! node agent ([`node`]) that runs each pod in a network namespace on a
//! bridge inside the run's node namespace, with the sidecar injected and
//! `mesh-proxy init` applied as on Kubernetes. A daemon ([`daemon`]) holds
//! them and serves the API ([`server`]) on a Unix socket in the state
//! directory; the controller reads the same API as its store.

use std::path::{Path, PathBuf};

pub mod client;
pub mod daemon;
pub mod hosts;
pub mod ipam;
pub mod netns;
pub mod node;
pub mod objects;
pub mod reconcile;
pub mod scrape;
pub mod server;
pub mod service_proxy;
pub mod store;
pub mod sweep;

/// Where a run keeps its state.
#[derive(Debug, Clone)]
pub struct StateDir(pub PathBuf);

impl StateDir {
    /// `--state-dir`, else `$MESHCTL_LOCAL_DIR`, else `/var/lib/meshctl/local`
    /// for root (pods run as other users and must reach their files), else
    /// the user's data dir.
    pub fn resolve(flag: Option<PathBuf>) -> Self {
        if let Some(p) = flag.or_else(|| std::env::var_os("MESHCTL_LOCAL_DIR").map(PathBuf::from)) {
            return Self(p);
        }
        if nix::unistd::geteuid().is_root() {
            return Self(PathBuf::from("/var/lib/meshctl/local"));
        }
        let data = std::env::var_os("XDG_DATA_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/share")))
            .unwrap_or_else(|| PathBuf::from("/var/lib"));
        Self(data.join("meshctl/local"))
    }

    /// The daemon's API socket.
    pub fn socket(&self) -> PathBuf {
        self.0.join("api.sock")
    }

    /// The controller's debug API (`/debug/syncz`).
    pub fn controller_socket(&self) -> PathBuf {
        self.0.join("controller.sock")
    }

    /// The daemon's log.
    pub fn daemon_log(&self) -> PathBuf {
        self.0.join("daemon.log")
    }

    /// The controller's log.
    pub fn controller_log(&self) -> PathBuf {
        self.0.join("controller.log")
    }

    /// CA material.
    pub fn ca(&self) -> PathBuf {
        self.0.join("ca")
    }

    /// A pod's directory (logs, token, working directory).
    pub fn pod_dir(&self, ns: &str, pod: &str) -> PathBuf {
        self.0.join("pods").join(ns).join(pod)
    }
}

/// Finds a sibling binary of this executable, else on `PATH`.
pub fn find_binary(name: &str) -> anyhow::Result<PathBuf> {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe.parent()
    {
        for d in [Some(dir), dir.parent()].into_iter().flatten() {
            let p = d.join(name);
            if p.is_file() {
                return Ok(p);
            }
        }
    }
    std::env::var_os("PATH")
        .and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        })
        .ok_or_else(|| {
            anyhow::anyhow!(
                "cannot find {name}: build it (cargo build --workspace) or put it on PATH"
            )
        })
}
