//! The index kept current one change at a time.
//!
//! [`Indexer::apply`] records what a batch of [`Change`]s touches; then
//! [`Indexer::publish`] recomputes only that and publishes a new
//! [`Index`] when some resource's content changed:
//! - a pod: its own resource, and the membership of that pod in the
//!   Services of its namespace that select it (or list it in a slice);
//! - a Service or a slice: that Service's registration and endpoints,
//!   and the routing of the Services that route to it;
//! - the mesh resources: every Service's routing and every pod's policy
//!   (no pod is matched against a selector again, and what did not
//!   change is not re-encoded).
//!
//! When two things claim one address, a pod wins over a Service and a
//! Service over a ServiceEntry (then the first by name), whatever the
//! order of the changes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use api::cluster::{EndpointSlice, MeshConfig, Pod, Service as KubeService};
use api::discovery::{Decoded, Endpoint, Endpoints, Resolved, Workload};
use api::proto::WorkloadPolicy;

use super::change::{Change, Key, Kind};
use super::{
    Entry, Index, Registered, entry, hostname, member, registered, slice_members, workload,
};

/// Who claims an address; the first in this order gets it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Claim {
    Pod(Key),
    Service(Key),
    Entry(String),
}

/// A routed-to host: a Service, or a ServiceEntry's host.
struct Host {
    reg: Registered,
    origin: Claim,
    /// Its endpoints, sorted by address and name (the order they are
    /// sent in).
    members: Vec<Endpoint>,
    /// The hosts whose endpoints its routing needs.
    needs: Vec<String>,
    entry: Option<Arc<Entry>>,
}

struct PodState {
    ip: Option<IpAddr>,
    entry: Option<Arc<Entry>>,
    policy: Option<WorkloadPolicy>,
}

/// What a batch touched.
#[derive(Default)]
struct Dirty {
    config: bool,
    entries: bool,
    services: BTreeSet<Key>,
    members: BTreeMap<Key, BTreeSet<String>>,
    slices: BTreeSet<Key>,
    routing: BTreeSet<String>,
    endpoints: BTreeSet<String>,
    pods: BTreeSet<Key>,
    addrs: BTreeSet<IpAddr>,
}

/// The index's inputs and what was derived from them.
pub struct Indexer {
    trust_domain: String,
    config: MeshConfig,
    pods: HashMap<Key, Pod>,
    ns_pods: HashMap<String, BTreeSet<String>>,
    services: HashMap<Key, KubeService>,
    ns_services: HashMap<String, BTreeSet<String>>,
    slices: HashMap<Key, EndpointSlice>,
    service_slices: HashMap<Key, Vec<String>>,
    hosts: HashMap<String, Host>,
    needed_by: HashMap<String, Vec<String>>,
    claims: HashMap<IpAddr, Vec<Claim>>,
    pod_states: HashMap<Key, PodState>,
    view: Index,
    dirty: Dirty,
    changed: bool,
}

/// Sets `key` to `new` in `objects` (and its name in `by_ns`); what it
/// was, when that differs.
fn replace<V: Clone + PartialEq>(
    objects: &mut HashMap<Key, V>,
    by_ns: &mut HashMap<String, BTreeSet<String>>,
    key: &Key,
    new: &Option<V>,
) -> Option<Option<V>> {
    let (ns, name) = key;
    let old = match new {
        Some(v) => {
            by_ns.entry(ns.clone()).or_default().insert(name.clone());
            objects.insert(key.clone(), v.clone())
        }
        None => {
            if let Some(set) = by_ns.get_mut(ns) {
                set.remove(name);
                if set.is_empty() {
                    by_ns.remove(ns);
                }
            }
            objects.remove(key)
        }
    };
    (old != *new).then_some(old)
}

// The sets that hold one element or a few (an address's claims, a host's
// dependents, a Service's slices) are sorted Vecs: one element takes a
// tenth of a B-tree node's space, which counts at 10,000 Services.

/// Adds `value` to `key`'s sorted set.
fn add_small<K: std::hash::Hash + Eq, V: Ord>(map: &mut HashMap<K, Vec<V>>, key: K, value: V) {
    let set = map.entry(key).or_default();
    if let Err(i) = set.binary_search(&value) {
        set.insert(i, value);
    }
}

/// Removes `value` from `key`'s sorted set, and the set once empty.
fn remove_small<K: std::hash::Hash + Eq, V: Ord>(map: &mut HashMap<K, Vec<V>>, key: &K, value: &V) {
    if let Some(set) = map.get_mut(key) {
        if let Ok(i) = set.binary_search(value) {
            set.remove(i);
        }
        if set.is_empty() {
            map.remove(key);
        }
    }
}

/// Whether two entries would be served alike.
fn same(a: &Entry, b: &Entry) -> bool {
    a.version == b.version
        && a.own.as_ref().map(|o| &o.version) == b.own.as_ref().map(|o| &o.version)
        && a.needs == b.needs
        && a.export_to == b.export_to
}

impl Indexer {
    /// An empty index for `trust_domain`.
    pub fn new(trust_domain: &str) -> Self {
        Self {
            trust_domain: trust_domain.to_string(),
            config: MeshConfig::default(),
            pods: HashMap::new(),
            ns_pods: HashMap::new(),
            services: HashMap::new(),
            ns_services: HashMap::new(),
            slices: HashMap::new(),
            service_slices: HashMap::new(),
            hosts: HashMap::new(),
            needed_by: HashMap::new(),
            claims: HashMap::new(),
            pod_states: HashMap::new(),
            view: Index::default(),
            dirty: Dirty::default(),
            changed: false,
        }
    }

    /// Records a batch; [`publish`](Self::publish) computes it.
    pub fn apply(&mut self, changes: impl IntoIterator<Item = Change>) {
        for c in changes {
            match c {
                Change::Pod(key, pod) => self.pod(key, pod),
                Change::Service(key, svc) => self.service(key, svc),
                Change::Slice(key, slice) => self.slice(key, slice),
                Change::Config(config) => {
                    if *config != self.config {
                        self.config = *config;
                        self.dirty.config = true;
                    }
                }
                Change::Relisted(kind, keep) => self.relisted(kind, &keep),
            }
        }
    }

    fn relisted(&mut self, kind: Kind, keep: &BTreeSet<Key>) {
        let gone = |keys: Vec<&Key>| -> Vec<Key> {
            keys.into_iter()
                .filter(|k| !keep.contains(*k))
                .cloned()
                .collect()
        };
        match kind {
            Kind::Pods => {
                for k in gone(self.pods.keys().collect()) {
                    self.pod(k, None);
                }
            }
            Kind::Services => {
                for k in gone(self.services.keys().collect()) {
                    self.service(k, None);
                }
            }
            Kind::Slices => {
                for k in gone(self.slices.keys().collect()) {
                    self.slice(k, None);
                }
            }
        }
    }

    fn pod(&mut self, key: Key, pod: Option<Pod>) {
        let Some(old) = replace(&mut self.pods, &mut self.ns_pods, &key, &pod) else {
            return;
        };
        let (ns, name) = &key;
        self.dirty.pods.insert(key.clone());
        for svc_name in self.ns_services.get(ns).into_iter().flatten() {
            let svc_key = (ns.clone(), svc_name.clone());
            let Some(svc) = self.services.get(&svc_key) else {
                continue;
            };
            if svc.selector.is_empty() {
                let listed = self
                    .service_slices
                    .get(&svc_key)
                    .into_iter()
                    .flatten()
                    .filter_map(|s| self.slices.get(&(ns.clone(), s.clone())))
                    .any(|s| {
                        s.endpoints
                            .iter()
                            .any(|e| e.pod.as_deref() == Some(name.as_str()))
                    });
                if listed {
                    self.dirty.slices.insert(svc_key);
                }
            } else if [&old, &pod]
                .into_iter()
                .flatten()
                .any(|p| super::selects(svc, p))
            {
                self.dirty
                    .members
                    .entry(svc_key)
                    .or_default()
                    .insert(name.clone());
            }
        }
    }

    fn service(&mut self, key: Key, svc: Option<KubeService>) {
        if replace(&mut self.services, &mut self.ns_services, &key, &svc).is_some() {
            self.dirty.services.insert(key);
        }
    }

    fn slice(&mut self, key: Key, slice: Option<EndpointSlice>) {
        let old = match &slice {
            Some(s) => self.slices.insert(key.clone(), s.clone()),
            None => self.slices.remove(&key),
        };
        if old == slice {
            return;
        }
        for s in old.iter().chain(&slice) {
            let svc = (s.namespace.clone(), s.service.clone());
            if slice.as_ref() == Some(s) {
                add_small(&mut self.service_slices, svc.clone(), key.1.clone());
            } else {
                remove_small(&mut self.service_slices, &svc, &key.1);
            }
            self.dirty.slices.insert(svc);
        }
    }

    /// Computes what the recorded changes touched; returns the new index
    /// when anything a proxy can see changed.
    pub fn publish(&mut self) -> Option<Index> {
        let dirty = std::mem::take(&mut self.dirty);
        self.flush(dirty);
        if !std::mem::take(&mut self.changed) {
            return None;
        }
        self.view.version += 1;
        Some(self.view.clone())
    }

    fn flush(&mut self, mut d: Dirty) {
        if d.config {
            d.entries = true;
            d.routing.extend(self.hosts.keys().cloned());
            d.pods.extend(self.pods.keys().cloned());
        }
        for key in std::mem::take(&mut d.services) {
            self.register_service(&key, &mut d);
            d.members.remove(&key);
            d.slices.remove(&key);
        }
        if d.entries {
            self.register_entries(&mut d);
        }
        for (key, names) in std::mem::take(&mut d.members) {
            self.update_members(&key, &names, &mut d);
        }
        for key in std::mem::take(&mut d.slices) {
            self.update_slice_members(&key, &mut d);
        }
        for host in std::mem::take(&mut d.routing) {
            self.route(&host, &mut d);
        }
        for host in std::mem::take(&mut d.endpoints) {
            self.publish_endpoints(&host);
        }
        for key in std::mem::take(&mut d.pods) {
            self.update_pod(&key, &mut d);
        }
        for ip in std::mem::take(&mut d.addrs) {
            self.publish_address(ip);
        }
    }

    fn claim(&mut self, ip: IpAddr, c: Claim, d: &mut Dirty) {
        add_small(&mut self.claims, ip, c);
        d.addrs.insert(ip);
    }

    fn release(&mut self, ip: IpAddr, c: &Claim, d: &mut Dirty) {
        remove_small(&mut self.claims, &ip, c);
        d.addrs.insert(ip);
    }

    /// Drops `host`, releasing its addresses and what its routing needed.
    fn unregister(&mut self, host: &str, d: &mut Dirty) {
        let Some(h) = self.hosts.remove(host) else {
            return;
        };
        for a in &h.reg.addresses {
            self.release(*a, &h.origin, d);
        }
        for n in &h.needs {
            self.unneed(n, host, d);
        }
        d.endpoints.insert(host.to_string());
        d.routing
            .extend(self.needed_by.get(host).into_iter().flatten().cloned());
    }

    fn unneed(&mut self, needed: &str, by: &str, d: &mut Dirty) {
        remove_small(&mut self.needed_by, &needed.to_string(), &by.to_string());
        d.endpoints.insert(needed.to_string());
    }

    fn register(&mut self, mut reg: Registered, origin: Claim, d: &mut Dirty) {
        let host = reg.service.hostname.clone();
        let members = sorted(std::mem::take(&mut reg.endpoints));
        for a in &reg.addresses {
            self.claim(*a, origin.clone(), d);
        }
        d.routing.insert(host.clone());
        d.routing
            .extend(self.needed_by.get(&host).into_iter().flatten().cloned());
        d.endpoints.insert(host.clone());
        self.hosts.insert(
            host,
            Host {
                reg,
                origin,
                members,
                needs: Vec::new(),
                entry: None,
            },
        );
    }

    fn register_service(&mut self, key: &Key, d: &mut Dirty) {
        let host = hostname(&key.0, &key.1);
        self.unregister(&host, d);
        let Some(svc) = self.services.get(key) else {
            // A ServiceEntry may declare the same host.
            d.entries = true;
            return;
        };
        let mut reg = registered(svc);
        reg.endpoints = if svc.selector.is_empty() {
            self.slice_endpoints(key)
        } else {
            let ns = self.ns_pods.get(&key.0).into_iter().flatten();
            ns.filter_map(|name| self.pods.get(&(key.0.clone(), name.clone())))
                .filter_map(|p| member(svc, p, &self.trust_domain))
                .collect()
        };
        self.register(reg, Claim::Service(key.clone()), d);
    }

    fn register_entries(&mut self, d: &mut Dirty) {
        let old: Vec<String> = self
            .hosts
            .iter()
            .filter(|(_, h)| matches!(h.origin, Claim::Entry(_)))
            .map(|(k, _)| k.clone())
            .collect();
        for host in &old {
            self.unregister(host, d);
        }
        for reg in crate::service_entry::services(&self.config) {
            let host = reg.service.hostname.clone();
            if self.hosts.contains_key(&host) {
                tracing::debug!(%host, "ServiceEntry host already registered; first one kept");
                continue;
            }
            self.register(reg, Claim::Entry(host), d);
        }
    }

    fn slice_endpoints(&self, key: &Key) -> Vec<Endpoint> {
        let Some(svc) = self.services.get(key) else {
            return Vec::new();
        };
        let slices = self
            .service_slices
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|s| self.slices.get(&(key.0.clone(), s.clone())));
        slice_members(
            svc,
            slices,
            |name| self.pods.get(&(key.0.clone(), name.to_string())),
            &self.trust_domain,
        )
    }

    fn update_members(&mut self, key: &Key, names: &BTreeSet<String>, d: &mut Dirty) {
        let Some(svc) = self.services.get(key) else {
            return;
        };
        let host = hostname(&key.0, &key.1);
        let Some(h) = self.hosts.get_mut(&host) else {
            return;
        };
        for name in names {
            let old = h
                .members
                .iter()
                .position(|e| e.workload.name == *name)
                .map(|i| h.members.remove(i));
            let pod = self.pods.get(&(key.0.clone(), name.clone()));
            let new = pod.and_then(|p| member(svc, p, &self.trust_domain));
            if old != new {
                d.endpoints.insert(host.clone());
            }
            if let Some(e) = new {
                let at = h
                    .members
                    .binary_search_by(|m| order(m).cmp(&order(&e)))
                    .unwrap_or_else(|i| i);
                h.members.insert(at, e);
            }
        }
    }

    fn update_slice_members(&mut self, key: &Key, d: &mut Dirty) {
        let endpoints = sorted(self.slice_endpoints(key));
        let host = hostname(&key.0, &key.1);
        if let Some(h) = self.hosts.get_mut(&host)
            && h.members != endpoints
        {
            h.members = endpoints;
            d.endpoints.insert(host);
        }
    }

    /// Recomputes `host`'s routing and address resource.
    fn route(&mut self, host: &str, d: &mut Dirty) {
        let Some(h) = self.hosts.get(host) else {
            return;
        };
        let mut s = h.reg.service.clone();
        let lookup = |name: &str| self.hosts.get(name).map(|h| &h.reg.service);
        s.routing = crate::traffic::routing(&self.config, &s, &lookup).map(Box::new);
        let needs: Vec<String> = match &s.routing {
            Some(r) => r.backends.iter().map(|b| b.host.clone()).collect(),
            None => vec![s.hostname.clone()],
        };
        let e = Entry {
            export_to: h.reg.export_to.clone(),
            ..entry(Decoded::Address(Resolved::Service(s)), needs.clone())
        };
        let old = self
            .hosts
            .get_mut(host)
            .map(|h| std::mem::take(&mut h.needs))
            .unwrap_or_default();
        for n in old.iter().filter(|n| !needs.contains(n)) {
            self.unneed(n, host, d);
        }
        for n in needs.iter().filter(|n| !old.contains(n)) {
            add_small(&mut self.needed_by, n.clone(), host.to_string());
            d.endpoints.insert(n.clone());
        }
        let Some(h) = self.hosts.get_mut(host) else {
            return;
        };
        h.needs = needs;
        if h.entry.as_deref().is_none_or(|o| !same(o, &e)) {
            h.entry = Some(Arc::new(e));
            d.addrs.extend(h.reg.addresses.iter().copied());
        }
    }

    fn publish_endpoints(&mut self, host: &str) {
        let e = self.needed_by.contains_key(host).then(|| {
            let list = self
                .hosts
                .get(host)
                .map(|h| h.members.clone())
                .unwrap_or_default();
            entry(
                Decoded::Endpoints(Endpoints {
                    host: host.to_string(),
                    endpoints: list,
                }),
                Vec::new(),
            )
        });
        let current = self.view.endpoints.get(host);
        match e {
            Some(e) if current.is_none_or(|c| c.version != e.version) => {
                self.view
                    .endpoints
                    .insert_mut(host.to_string(), Arc::new(e));
                self.changed = true;
            }
            None if current.is_some() => {
                self.view.endpoints.remove_mut(host);
                self.changed = true;
            }
            _ => {}
        }
    }

    fn update_pod(&mut self, key: &Key, d: &mut Dirty) {
        let claim = Claim::Pod(key.clone());
        let ip = self.pods.get(key).and_then(|p| p.ip);
        let old = self.pod_states.remove(key);
        if let Some(o) = &old
            && let Some(old_ip) = o.ip
            && Some(old_ip) != ip
        {
            self.release(old_ip, &claim, d);
        }
        let pod = self.pods.get(key);
        let policy = pod.and_then(|p| crate::workload_policy::for_pod(&self.config, p));
        let (Some(pod), Some(ip)) = (pod, ip) else {
            return;
        };
        let w = workload(pod, ip, &self.trust_domain);
        let unchanged = old.as_ref().is_some_and(|o| {
            o.ip == Some(ip)
                && o.policy == policy
                && o.entry.as_ref().is_some_and(
                    |e| matches!(&*e.resource, Decoded::Address(Resolved::Workload(x)) if *x == w),
                )
        });
        let entry = if unchanged {
            old.and_then(|o| o.entry)
        } else {
            Some(Arc::new(pod_entry(w, policy.clone())))
        };
        self.pod_states.insert(
            key.clone(),
            PodState {
                ip: Some(ip),
                entry,
                policy,
            },
        );
        if !unchanged {
            self.claim(ip, claim, d);
        }
    }

    fn claimed(&self, c: &Claim) -> Option<Arc<Entry>> {
        match c {
            Claim::Pod(k) => self.pod_states.get(k)?.entry.clone(),
            Claim::Service(k) => self.hosts.get(&hostname(&k.0, &k.1))?.entry.clone(),
            Claim::Entry(host) => self.hosts.get(host)?.entry.clone(),
        }
    }

    fn publish_address(&mut self, ip: IpAddr) {
        let e = self
            .claims
            .get(&ip)
            .and_then(|cs| cs.iter().find_map(|c| self.claimed(c)));
        let current = self.view.by_addr.get(&ip);
        match e {
            Some(e) if current.is_none_or(|c| !same(c, &e)) => {
                self.view.by_addr.insert_mut(ip, e);
                self.changed = true;
            }
            None if current.is_some() => {
                self.view.by_addr.remove_mut(&ip);
                self.changed = true;
            }
            _ => {}
        }
    }
}

/// The order endpoints are sent in: by address, then name.
fn order(e: &Endpoint) -> (IpAddr, &str) {
    (e.workload.address, &e.workload.name)
}

fn sorted(mut list: Vec<Endpoint>) -> Vec<Endpoint> {
    list.sort_by(|a, b| order(a).cmp(&order(b)));
    list
}

/// A pod's resource, with its own view when a policy applies to it.
fn pod_entry(w: Workload, policy: Option<WorkloadPolicy>) -> Entry {
    let own = policy.map(|p| {
        Box::new(entry(
            Decoded::Address(Resolved::Workload(Workload {
                policy: Some(Box::new(p)),
                ..w.clone()
            })),
            Vec::new(),
        ))
    });
    Entry {
        own,
        ..entry(Decoded::Address(Resolved::Workload(w)), Vec::new())
    }
}
