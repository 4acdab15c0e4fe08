//! Pure translation of cluster state into what proxies ask for: each
//! address (a Service's cluster IP or a pod IP) resolves to a versioned
//! resource, and each destination host those Services route to has an
//! endpoints resource of its own (the ready pods that the selector picks,
//! a selector-less Service's EndpointSlices, or a ServiceEntry's
//! endpoints). Every resource is encoded once here and its bytes are
//! shared by every subscriber.
//!
//! The [`Indexer`] keeps it current from [`Change`]s, one object at a
//! time: a pod's change re-encodes that pod and the endpoints of the
//! Services that select it, nothing else.

use std::net::IpAddr;
use std::sync::Arc;

use api::cluster::{self, Snapshot, TargetPort};
use api::discovery::{Decoded, Endpoint, Resolved, Service, ServicePort, Workload, encode};
use api::proto;
use api::protocol::AppProtocol;
use api::spiffe::SpiffeId;
use rpds::HashTrieMapSync;

mod change;
mod indexer;

pub use change::{Change, Changes, Feed, Key, Kind, feed};
pub use indexer::Indexer;

/// A Service as the index receives it: from a Kubernetes Service or a
/// ServiceEntry host, with its endpoints, the addresses that resolve to
/// it and the namespaces it is exported to.
#[derive(Debug, Clone)]
pub struct Registered {
    /// The Service, without routing yet.
    pub service: Service,
    /// Its ready endpoints.
    pub endpoints: Vec<Endpoint>,
    /// The addresses that resolve to it.
    pub addresses: Vec<IpAddr>,
    /// `exportTo`, `None`: every namespace.
    pub export_to: Option<Vec<String>>,
}

/// A resource with its content version and its encoded form.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Changes whenever the content does.
    pub version: String,
    /// The content, as every allowed subscriber sees it.
    pub resource: Arc<Decoded>,
    /// Its encoding (the name is set per subscription).
    wire: proto::Resource,
    /// The hosts whose endpoints a subscriber needs with it.
    pub needs: Arc<[String]>,
    /// The namespaces it is exported to (`exportTo`, `.` resolved);
    /// `None`: every namespace.
    pub export_to: Option<Vec<String>>,
    /// A workload's own view, with the policy its proxy enforces: served
    /// only to that pod's proxy.
    pub own: Option<Box<Entry>>,
}

impl Entry {
    /// Whether a proxy in `namespace` may see it.
    pub fn visible_to(&self, namespace: &str) -> bool {
        self.export_to
            .as_ref()
            .is_none_or(|to| to.iter().any(|n| n == "*" || n == namespace))
    }

    /// The view a proxy at `ip` with `id` gets: the workload's own view
    /// when it is that workload, else the shared one.
    pub fn view_for(&self, ip: IpAddr, id: &SpiffeId) -> &Entry {
        match (&self.own, &*self.resource) {
            (Some(own), Decoded::Address(Resolved::Workload(w)))
                if w.address == ip && w.identity.as_ref() == Some(id) =>
            {
                own
            }
            _ => self,
        }
    }

    /// The resource as sent under `name`; the bytes are shared.
    pub fn wire(&self, name: &str) -> proto::Resource {
        proto::Resource {
            name: name.to_string(),
            ..self.wire.clone()
        }
    }
}

/// `exportTo` as written, `.` read as `namespace`; `None` when absent or
/// empty (exported everywhere, Istio's default).
pub fn export_to(list: Option<&Vec<String>>, namespace: &str) -> Option<Vec<String>> {
    let list = list.filter(|l| !l.is_empty())?;
    Some(
        list.iter()
            .map(|n| {
                if n == "." {
                    namespace.to_string()
                } else {
                    n.clone()
                }
            })
            .collect(),
    )
}

/// Address -> resource, and host -> endpoints, at one version: what the
/// discovery streams read. Cloning it is cheap (its maps are persistent
/// and share their structure), so the [`Indexer`] publishes a new one
/// after each batch of changes without copying what did not change.
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// Grows with every published change.
    pub version: u64,
    by_addr: HashTrieMapSync<IpAddr, Arc<Entry>>,
    endpoints: HashTrieMapSync<String, Arc<Entry>>,
}

impl Index {
    /// Translates `snap` at once (tests, benches and tools; the
    /// controller applies changes with an [`Indexer`]).
    pub fn build(snap: &Snapshot, trust_domain: &str) -> Self {
        let mut indexer = Indexer::new(trust_domain);
        indexer.apply(Change::between(&Snapshot::default(), snap));
        let mut idx = indexer.publish().unwrap_or_default();
        idx.version = snap.version;
        idx
    }

    /// What a subscription name resolves to (`None`: does not exist).
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.by_addr.get(&name.parse().ok()?).map(|e| &**e)
    }

    /// The endpoints of `host`, if a routed-to host.
    pub fn endpoints(&self, host: &str) -> Option<&Entry> {
        self.endpoints.get(host).map(|e| &**e)
    }

    /// How many addresses and routed-to hosts it holds.
    pub fn len(&self) -> (usize, usize) {
        (self.by_addr.size(), self.endpoints.size())
    }
}

fn entry(r: Decoded, needs: Vec<String>) -> Entry {
    let wire = encode(String::new(), &r);
    Entry {
        version: wire.version.clone(),
        resource: Arc::new(r),
        wire,
        needs: needs.into(),
        export_to: None,
        own: None,
    }
}

fn workload(pod: &cluster::Pod, ip: IpAddr, trust_domain: &str) -> Workload {
    Workload {
        name: pod.name.clone(),
        namespace: pod.namespace.clone(),
        address: ip,
        identity: pod
            .meshed
            .then(|| SpiffeId::new(trust_domain, &pod.namespace, &pod.service_account).ok())
            .flatten(),
        labels: pod.labels.clone(),
        workload: pod.owner.clone(),
        policy: None,
    }
}

/// The hostname of the Service `name` in `namespace`.
pub fn hostname(namespace: &str, name: &str) -> String {
    format!("{name}.{namespace}.svc.cluster.local")
}

fn selects(svc: &cluster::Service, pod: &cluster::Pod) -> bool {
    !svc.selector.is_empty()
        && pod.namespace == svc.namespace
        && cluster::labels_match(&svc.selector, &pod.labels)
}

/// `pod` as an endpoint of `svc`, when the selector picks it and it is
/// ready.
fn member(svc: &cluster::Service, pod: &cluster::Pod, trust_domain: &str) -> Option<Endpoint> {
    if !pod.ready || !selects(svc, pod) {
        return None;
    }
    let ip = pod.ip?;
    let ports = svc
        .ports
        .iter()
        .filter_map(|sp| {
            let target = match &sp.target_port {
                TargetPort::Number(n) => Some(*n),
                TargetPort::Name(n) => pod.named_ports.get(n).copied(),
            }?;
            Some((sp.port, target))
        })
        .collect();
    Some(Endpoint {
        workload: workload(pod, ip, trust_domain),
        ports,
    })
}

/// The ready endpoints that `slices` list for the selector-less `svc`:
/// a Service port's target is the slice port of the same name; an
/// endpoint that is a known pod carries that pod's identity.
fn slice_members<'a>(
    svc: &cluster::Service,
    slices: impl Iterator<Item = &'a cluster::EndpointSlice>,
    pod: impl Fn(&str) -> Option<&'a cluster::Pod>,
    trust_domain: &str,
) -> Vec<Endpoint> {
    let mut out: Vec<Endpoint> = Vec::new();
    for slice in slices {
        let ports: std::collections::BTreeMap<u16, u16> = svc
            .ports
            .iter()
            .filter_map(|sp| Some((sp.port, *slice.ports.get(&sp.name)?)))
            .collect();
        for e in slice.endpoints.iter().filter(|e| e.ready) {
            if out.iter().any(|o| o.workload.address == e.address) {
                continue;
            }
            let known = e
                .pod
                .as_deref()
                .and_then(&pod)
                .filter(|p| p.ip == Some(e.address));
            let workload = match known {
                Some(p) => workload(p, e.address, trust_domain),
                None => Workload {
                    name: e.pod.clone().unwrap_or_else(|| e.address.to_string()),
                    namespace: svc.namespace.clone(),
                    address: e.address,
                    identity: None,
                    labels: Default::default(),
                    workload: String::new(),
                    policy: None,
                },
            };
            out.push(Endpoint {
                workload,
                ports: ports.clone(),
            });
        }
    }
    out.sort_by_key(|e| e.workload.address);
    out
}

/// `svc` as the index registers it, without endpoints yet.
fn registered(svc: &cluster::Service) -> Registered {
    let service = Service {
        name: svc.name.clone(),
        namespace: svc.namespace.clone(),
        hostname: hostname(&svc.namespace, &svc.name),
        addresses: vec![svc.cluster_ip],
        ports: svc
            .ports
            .iter()
            .map(|p| ServicePort {
                name: p.name.clone(),
                port: p.port,
                protocol: AppProtocol::declared(p.app_protocol.as_deref(), Some(&p.name)),
            })
            .collect(),
        routing: None,
    };
    Registered {
        service,
        endpoints: Vec::new(),
        addresses: vec![svc.cluster_ip],
        export_to: export_to(svc.export_to.as_ref(), &svc.namespace),
    }
}

#[cfg(test)]
mod tests;
