//! What the runtime's API says about pods and services, as JSON.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// A pod's phase.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    /// Namespace and processes being set up.
    Pending,
    /// Processes running.
    Running,
    /// Setup failed; see the message.
    Failed,
    /// Being stopped and removed.
    Terminating,
}

/// A pod as `get pods` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PodStatus {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Owning Deployment.
    pub deployment: String,
    /// Phase.
    pub phase: Phase,
    /// Ready to serve.
    pub ready: bool,
    /// Container restarts.
    pub restarts: u32,
    /// Its IP.
    pub ip: Option<Ipv4Addr>,
    /// Whether the sidecar was injected.
    pub meshed: bool,
    /// Its network namespace.
    pub netns: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Why it is not running, if so.
    pub message: String,
    /// Seconds since creation.
    pub age_secs: u64,
}

/// A Service as `get services` shows it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// Cluster IP.
    pub cluster_ip: Ipv4Addr,
    /// `port/TCP` entries.
    pub ports: Vec<String>,
    /// Ready endpoints (`ip:port`).
    pub endpoints: Vec<String>,
}

/// Result of applying or deleting one object.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ObjectResult {
    /// `Kind ns/name`.
    pub object: String,
    /// `created`, `configured`, `unchanged`, `deleted`; empty on error.
    pub action: String,
    /// Field path of the problem, if any.
    pub field: String,
    /// Error or warning text.
    pub message: String,
    /// Whether this is an error (else at most a warning).
    pub error: bool,
}

/// Information about a run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunInfo {
    /// Run id: the prefix of its namespaces.
    pub id: String,
    /// The daemon's PID.
    pub pid: u32,
    /// The node namespace.
    pub node_ns: String,
    /// Whether the controller process runs.
    pub controller_running: bool,
}
