//! The object store: namespaces, service accounts, deployments, services
//! and pods, with the status the node agent reports. Every change bumps the
//! version, wakes the reconcilers and publishes a [`Snapshot`] for the
//! controller.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use api::cluster::{self, Snapshot, TargetPort};
use api::manifest::{Object, address};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use tokio::sync::watch;

use super::ipam::Pool;
use super::objects::{ObjectResult, Phase, PodStatus, ServiceStatus};

/// `(namespace, name)`.
pub type Key = (String, String);

/// One container to run.
#[derive(Clone, Debug, PartialEq)]
pub struct Container {
    /// Name.
    pub name: String,
    /// command + args.
    pub argv: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Declared ports (name, port).
    pub ports: Vec<(String, u16)>,
    /// UID/GID to run as (`securityContext`); root when unset.
    pub run_as: Option<(u32, u32)>,
}

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
    /// Sidecar injected.
    pub meshed: bool,
    /// Extra `mesh-proxy init` flags (from Istio's traffic annotations).
    pub redirect_args: Vec<String>,
    /// Containers.
    pub containers: Vec<Container>,
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
}

/// The store, shared by the API, the reconcilers and the node agent.
pub struct Store {
    state: Mutex<State>,
    changed: watch::Sender<u64>,
    snapshots: watch::Sender<Arc<Snapshot>>,
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

fn result(o: &Object, action: &str) -> ObjectResult {
    ObjectResult {
        object: address(o),
        action: action.into(),
        field: String::new(),
        message: String::new(),
        error: false,
    }
}

fn failure(o: &Object, field: &str, message: String) -> ObjectResult {
    ObjectResult {
        object: address(o),
        action: String::new(),
        field: field.into(),
        message,
        error: true,
    }
}

fn key(o: &Object) -> Key {
    (o.namespace().to_string(), o.name().to_string())
}

fn apply_one(s: &mut State, o: Object) -> (ObjectResult, bool) {
    let k = key(&o);
    if !matches!(o, Object::Namespace(_)) && !s.namespaces.contains_key(&k.0) {
        return (
            failure(
                &o,
                "metadata.namespace",
                format!("namespace {:?} not found; apply the Namespace first", k.0),
            ),
            false,
        );
    }
    match &o {
        Object::Namespace(n) => {
            let labels = n.metadata.labels.clone().unwrap_or_default();
            let prev = s.namespaces.insert(k.1.clone(), labels.clone());
            s.service_accounts
                .insert((k.1.clone(), "default".into()), ());
            let action = match prev {
                None => "created",
                Some(p) if p == labels => "unchanged",
                Some(_) => "configured",
            };
            (result(&o, action), action != "unchanged")
        }
        Object::ServiceAccount(_) => {
            let created = s.service_accounts.insert(k, ()).is_none();
            (
                result(&o, if created { "created" } else { "unchanged" }),
                created,
            )
        }
        Object::Service(svc) => {
            let prev = s.services.get(&k);
            if prev.is_some_and(|(p, _)| p == &**svc) {
                return (result(&o, "unchanged"), false);
            }
            let ip = match prev {
                Some((_, ip)) => *ip,
                None => match s.service_ips.allocate() {
                    Some(ip) => ip,
                    None => return (failure(&o, "spec", "no Service address left".into()), false),
                },
            };
            let action = if prev.is_some() {
                "configured"
            } else {
                "created"
            };
            s.services.insert(k, ((**svc).clone(), ip));
            (result(&o, action), true)
        }
        Object::Deployment(d) => {
            let sa = d
                .spec
                .as_ref()
                .and_then(|sp| sp.template.spec.as_ref())
                .and_then(|p| p.service_account_name.clone())
                .unwrap_or_else(|| "default".into());
            if !s.service_accounts.contains_key(&(k.0.clone(), sa.clone())) {
                return (
                    failure(
                        &o,
                        "spec.template.spec.serviceAccountName",
                        format!("ServiceAccount {}/{sa} not found; apply it first", k.0),
                    ),
                    false,
                );
            }
            let prev = s.deployments.get(&k);
            if prev.is_some_and(|p| p == &**d) {
                return (result(&o, "unchanged"), false);
            }
            let action = if prev.is_some() {
                "configured"
            } else {
                "created"
            };
            s.deployments.insert(k, (**d).clone());
            (result(&o, action), true)
        }
        // Every other kind is a mesh resource, kept for the controller.
        _ => {
            let mk = (o.kind().to_string(), k.0.clone(), k.1.clone());
            let action = match s.mesh.get(&mk) {
                None => "created",
                Some(prev) if prev == &o => "unchanged",
                Some(_) => "configured",
            };
            let r = result(&o, action);
            s.mesh.insert(mk, o);
            (r, action != "unchanged")
        }
    }
}

fn delete_one(s: &mut State, o: &Object) -> (ObjectResult, bool) {
    let k = key(o);
    let found = match o {
        Object::Namespace(_) => {
            if BUILTIN_NAMESPACES.contains(&k.1.as_str()) {
                return (
                    failure(
                        o,
                        "metadata.name",
                        "built-in namespaces cannot be deleted".into(),
                    ),
                    false,
                );
            }
            let ns = k.1.clone();
            let found = s.namespaces.remove(&ns).is_some();
            s.service_accounts.retain(|(n, _), _| n != &ns);
            s.deployments.retain(|(n, _), _| n != &ns);
            s.mesh.retain(|(_, n, _), _| n != &ns);
            let gone: Vec<Ipv4Addr> = s
                .services
                .iter()
                .filter(|((n, _), _)| n == &ns)
                .map(|(_, (_, ip))| *ip)
                .collect();
            for ip in gone {
                s.service_ips.release(ip);
            }
            s.services.retain(|(n, _), _| n != &ns);
            found
        }
        Object::ServiceAccount(_) => s.service_accounts.remove(&k).is_some(),
        Object::Deployment(_) => s.deployments.remove(&k).is_some(),
        Object::Service(_) => match s.services.remove(&k) {
            Some((_, ip)) => {
                s.service_ips.release(ip);
                true
            }
            None => false,
        },
        // Every other kind is a mesh resource.
        _ => s
            .mesh
            .remove(&(o.kind().to_string(), k.0.clone(), k.1.clone()))
            .is_some(),
    };
    if found {
        (result(o, "deleted"), true)
    } else {
        (failure(o, "metadata.name", "not found".into()), false)
    }
}

/// A warning when a Service's selector picks no Deployment's pods.
fn selector_warning(s: &State, k: &Key) -> Option<(String, String)> {
    let (svc, _) = s.services.get(k)?;
    let selector = svc
        .spec
        .as_ref()
        .and_then(|sp| sp.selector.clone())
        .unwrap_or_default();
    if selector.is_empty() {
        return Some((
            "spec.selector".into(),
            "no selector: the Service has no endpoints".into(),
        ));
    }
    let matches_any = s
        .deployments
        .iter()
        .any(|((ns, _), d)| ns == &k.0 && selects(&selector, &template_labels(d)));
    (!matches_any).then(|| {
        let sel = selector.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",");
        (
            "spec.selector".into(),
            format!("{sel} matches no Deployment's pods in namespace {:?}: the Service has no endpoints until one does", k.0),
        )
    })
}

/// The labels of a Deployment's pod template.
pub fn template_labels(d: &Deployment) -> BTreeMap<String, String> {
    d.spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn snapshot(s: &State) -> Snapshot {
    Snapshot {
        version: s.version,
        pods: s
            .pods
            .values()
            .map(|p| cluster::Pod {
                name: p.name.clone(),
                namespace: p.namespace.clone(),
                labels: p.labels.clone(),
                service_account: p.service_account.clone(),
                ip: Some(IpAddr::V4(p.ip)),
                meshed: p.meshed,
                ready: p.ready && p.phase == Phase::Running,
                named_ports: p
                    .containers
                    .iter()
                    .flat_map(|c| c.ports.iter().filter(|(n, _)| !n.is_empty()).cloned())
                    .collect(),
                owner: p.deployment.clone(),
            })
            .collect(),
        services: s
            .services
            .iter()
            .map(|(k, (svc, ip))| {
                let spec = svc.spec.clone().unwrap_or_default();
                cluster::Service {
                    export_to: cluster::export_to_annotation(svc.metadata.annotations.as_ref()),
                    name: k.1.clone(),
                    namespace: k.0.clone(),
                    cluster_ip: IpAddr::V4(*ip),
                    selector: spec.selector.unwrap_or_default(),
                    ports: spec
                        .ports
                        .unwrap_or_default()
                        .into_iter()
                        .map(|p| cluster::ServicePort {
                            name: p.name.unwrap_or_default(),
                            port: u16::try_from(p.port).unwrap_or(0),
                            target_port: match p.target_port {
                                Some(IntOrString::Int(n)) => {
                                    TargetPort::Number(u16::try_from(n).unwrap_or(0))
                                }
                                Some(IntOrString::String(n)) => TargetPort::Name(n),
                                None => TargetPort::Number(u16::try_from(p.port).unwrap_or(0)),
                            },
                            app_protocol: p.app_protocol,
                        })
                        .collect(),
                }
            })
            .collect(),
        config: mesh_config(s),
    }
}

/// The mesh resources in the native (Istio) model, Linkerd's translated.
fn mesh_config(s: &State) -> cluster::MeshConfig {
    let mut c = cluster::MeshConfig::default();
    for o in s.mesh.values().flat_map(Object::native) {
        match o {
            Object::VirtualService(vs) => c.virtual_services.push(*vs),
            Object::DestinationRule(dr) => c.destination_rules.push(*dr),
            Object::LocalRateLimit(rl) => c.rate_limits.push(*rl),
            Object::ServiceEntry(se) => c.service_entries.push(*se),
            Object::Sidecar(sc) => c.sidecars.push(*sc),
            _ => {}
        }
    }
    c
}
