//! The object store: namespaces, service accounts, deployments, services
//! and pods, with the status the node agent reports. Every change bumps the
//! version, wakes the reconcilers and publishes a [`Snapshot`] for the
//! controller.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use api::cluster::{self, Snapshot, TargetPort};
use api::manifest::Object;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{PodSpec, Service};
use tokio::sync::watch;

use super::ipam::Pool;
use super::objects::{ObjectResult, Phase, PodStatus, ServiceStatus};

/// `(namespace, name)`.
pub type Key = (String, String);

/// A pod and its status.
#[derive(Clone, Debug)]
pub struct PodRecord {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Owning Deployment.
    pub deployment: String,
    /// Hash of the template it was made from.
    pub template_hash: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// ServiceAccount.
    pub service_account: String,
    /// Its spec as the injector left it: what the node agent runs.
    pub spec: PodSpec,
    /// Whether the injector put the sidecar in.
    pub meshed: bool,
    /// Unique number in this run (names its namespace and proxy UID).
    pub seq: u64,
    /// Address.
    pub ip: Ipv4Addr,
    /// Bootstrap token.
    pub token: String,
    /// Phase.
    pub phase: Phase,
    /// Ready.
    pub ready: bool,
    /// Restarts.
    pub restarts: u32,
    /// Message.
    pub message: String,
    /// Creation time.
    pub created: SystemTime,
}

/// Everything the store holds.
pub struct State {
    /// Namespaces (name -> labels).
    pub namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// ServiceAccounts.
    pub service_accounts: BTreeMap<Key, ()>,
    /// Deployments.
    pub deployments: BTreeMap<Key, Deployment>,
    /// Services and their cluster IPs.
    pub services: BTreeMap<Key, (Service, Ipv4Addr)>,
    /// Pods.
    pub pods: BTreeMap<Key, PodRecord>,
    /// Mesh resources (VirtualService, DestinationRule, ...), by (kind,
    /// namespace, name); the snapshot hands the traffic kinds to the
    /// controller (security kinds are kept for later work).
    pub mesh: BTreeMap<(String, String, String), Object>,
    /// Version.
    pub version: u64,
    /// Pod addresses.
    pub pod_ips: Pool,
    /// Service addresses.
    pub service_ips: Pool,
    /// Next pod number.
    pub next_seq: u64,
    /// How pods are injected (the controller's address is set when the
    /// runtime starts).
    pub injection: api::inject::Settings,
}

/// The store, shared by the API, the reconcilers and the node agent.
pub struct Store {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    snapshots: watch::Sender<Arc<Snapshot>>,
}

/// The local runtime's injection: every pod unless it or its namespace
/// opts out, the proxy as a native sidecar (the node agent starts the app
/// once the proxy's startup probe passes).
fn injection_defaults() -> api::inject::Settings {
    api::inject::Settings {
        pull_policy: None,
        controller: String::new(),
        proxy_uid: 0,
        native_sidecars: true,
        by_default: true,
        ..api::inject::Settings::for_image(super::node::PROXY_IMAGE)
    }
}

/// Namespaces that always exist.
pub const BUILTIN_NAMESPACES: &[&str] = &["default", "mesh-system"];

impl Store {
    /// A store with the built-in namespaces and their default accounts.
    pub fn new() -> Arc<Self> {
        let mut s = State {
            namespaces: BTreeMap::new(),
            service_accounts: BTreeMap::new(),
            deployments: BTreeMap::new(),
            services: BTreeMap::new(),
            pods: BTreeMap::new(),
            mesh: BTreeMap::new(),
            version: 1,
            pod_ips: Pool::pods(),
            service_ips: Pool::services(),
            next_seq: 1,
            injection: injection_defaults(),
        };
        for ns in BUILTIN_NAMESPACES {
            s.namespaces.insert((*ns).to_string(), BTreeMap::new());
            s.service_accounts
                .insert(((*ns).to_string(), "default".into()), ());
        }
        // The gateway is not a pod address.
        s.pod_ips.reserve(super::ipam::GATEWAY);
        let snap = Arc::new(snapshot(&s));
        Arc::new(Self {
            state: Mutex::new(s),
            changed: watch::channel(1).0,
            snapshots: watch::channel(snap).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Reads the state.
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.lock())
    }

    /// Changes the state; `f` returns whether anything changed.
    pub fn write<T>(&self, f: impl FnOnce(&mut State) -> (T, bool)) -> T {
        let mut s = self.lock();
        let (out, changed) = f(&mut s);
        if changed {
            s.version += 1;
            let snap = Arc::new(snapshot(&s));
            let v = s.version;
            drop(s);
            self.snapshots.send_replace(snap);
            self.changed.send_replace(v);
        }
        out
    }

    /// Wakes on every change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The controller's view, on every change.
    pub fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.snapshots.subscribe()
    }

    /// Applies objects (already validated one by one), in dependency order.
    pub fn apply(&self, mut objects: Vec<Object>) -> Vec<ObjectResult> {
        objects.sort_by_key(Object::apply_rank);
        let services: Vec<Option<Key>> = objects
            .iter()
            .map(|o| matches!(o, Object::Service(_)).then(|| key(o)))
            .collect();
        let mut results: Vec<ObjectResult> = objects
            .into_iter()
            .map(|o| self.write(|s| apply_one(s, o)))
            .collect();
        // Judged after the whole batch: its Deployments count.
        self.read(|s| {
            for (r, k) in results.iter_mut().zip(services) {
                if let Some(k) = k.filter(|_| !r.error)
                    && let Some((field, message)) = selector_warning(s, &k)
                {
                    r.field = field;
                    r.message = message;
                }
            }
        });
        results
    }

    /// Deletes objects.
    pub fn delete(&self, objects: Vec<Object>) -> Vec<ObjectResult> {
        objects
            .into_iter()
            .map(|o| self.write(|s| delete_one(s, &o)))
            .collect()
    }

    /// Who holds `token`.
    pub fn review_token(&self, token: &str) -> Option<cluster::TokenReview> {
        if token.is_empty() {
            return None;
        }
        self.read(|s| {
            s.pods
                .values()
                .find(|p| p.meshed && p.token == token && p.phase != Phase::Terminating)
                .map(|p| cluster::TokenReview {
                    pod: p.name.clone(),
                    namespace: p.namespace.clone(),
                    service_account: p.service_account.clone(),
                })
        })
    }

    /// Services, Deployments and mesh resources as applied (for analysis).
    pub fn objects(&self) -> Vec<Object> {
        self.read(|s| {
            let services = s
                .services
                .values()
                .map(|(svc, _)| Object::Service(Box::new(svc.clone())));
            let deployments = s
                .deployments
                .values()
                .map(|d| Object::Deployment(Box::new(d.clone())));
            services
                .chain(deployments)
                .chain(s.mesh.values().cloned())
                .collect()
        })
    }

    /// Pods, for the API.
    pub fn pods(&self) -> Vec<PodStatus> {
        self.read(|s| s.pods.values().map(pod_status).collect())
    }

    /// Services with their ready endpoints, for the API.
    pub fn services(&self) -> Vec<ServiceStatus> {
        let snap = self.snapshots.borrow().clone();
        snap.services
            .iter()
            .map(|svc| ServiceStatus {
                name: svc.name.clone(),
                namespace: svc.namespace.clone(),
                cluster_ip: match svc.cluster_ip {
                    IpAddr::V4(a) => a,
                    IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
                },
                ports: svc
                    .ports
                    .iter()
                    .map(|p| format!("{}/TCP", p.port))
                    .collect(),
                endpoints: snap
                    .pods
                    .iter()
                    .filter(|p| {
                        p.ready && p.namespace == svc.namespace && selects(&svc.selector, &p.labels)
                    })
                    .filter_map(|p| {
                        let port = svc.ports.first()?;
                        let target = match &port.target_port {
                            TargetPort::Number(n) => Some(*n),
                            TargetPort::Name(n) => p.named_ports.get(n).copied(),
                        }?;
                        Some(format!("{}:{target}", p.ip?))
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Whether `labels` carry every pair of a non-empty `selector`.
pub fn selects(selector: &BTreeMap<String, String>, labels: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && api::cluster::labels_match(selector, labels)
}

fn pod_status(p: &PodRecord) -> PodStatus {
    PodStatus {
        name: p.name.clone(),
        namespace: p.namespace.clone(),
        deployment: p.deployment.clone(),
        phase: p.phase,
        ready: p.ready,
        restarts: p.restarts,
        ip: Some(p.ip),
        meshed: p.meshed,
        netns: String::new(),
        labels: p.labels.clone(),
        message: p.message.clone(),
        age_secs: p.created.elapsed().map(|d| d.as_secs()).unwrap_or(0),
    }
}

/// The labels of a Deployment's pod template.
pub fn template_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

mod changes;
mod snapshot;

use changes::{apply_one, delete_one, key, selector_warning};
use snapshot::snapshot;
