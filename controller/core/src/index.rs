//! Pure translation of a cluster snapshot into what proxies ask for: each
//! address (a Service's cluster IP or a pod IP) resolves to a versioned
//! resource, and each destination host those Services route to has an
//! endpoints resource of its own (the ready pods that the selector picks,
//! or a ServiceEntry's endpoints). Every resource is encoded once here and
//! its bytes are shared by every subscriber.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use api::cluster::{self, Snapshot, TargetPort};
use api::discovery::{
    Decoded, Endpoint, Endpoints, Resolved, Service, ServicePort, Workload, encode,
};
use api::proto;
use api::protocol::AppProtocol;
use api::spiffe::SpiffeId;

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

/// Address -> resource, and host -> endpoints, for one snapshot.
#[derive(Debug, Default)]
pub struct Index {
    /// The snapshot version it reflects.
    pub version: u64,
    by_addr: HashMap<IpAddr, Entry>,
    endpoints: HashMap<String, Entry>,
}

impl Index {
    /// Translates `snap`.
    pub fn build(snap: &Snapshot, trust_domain: &str) -> Self {
        let mut by_addr = HashMap::new();
        for pod in &snap.pods {
            if let Some(ip) = pod.ip {
                let w = workload(pod, ip, trust_domain);
                let policy = crate::workload_policy::for_pod(&snap.config, pod);
                let own = policy.map(|p| {
                    Box::new(entry(
                        Decoded::Address(Resolved::Workload(Workload {
                            policy: Some(Box::new(p)),
                            ..w.clone()
                        })),
                        Vec::new(),
                    ))
                });
                by_addr.insert(
                    ip,
                    Entry {
                        own,
                        ..entry(Decoded::Address(Resolved::Workload(w)), Vec::new())
                    },
                );
            }
        }
        // A Service selects pods of its own namespace only.
        let mut pods_by_ns: HashMap<&str, Vec<&cluster::Pod>> = HashMap::new();
        for p in &snap.pods {
            pods_by_ns.entry(p.namespace.as_str()).or_default().push(p);
        }
        // Services by their cluster IP, then ServiceEntries by theirs.
        let services: Vec<Registered> = snap
            .services
            .iter()
            .map(|svc| {
                let pods = pods_by_ns
                    .get(svc.namespace.as_str())
                    .map_or(&[][..], Vec::as_slice);
                service(svc, pods, trust_domain)
            })
            .chain(crate::service_entry::services(&snap.config))
            .collect();
        let by_host: HashMap<&str, &Registered> = services
            .iter()
            .map(|r| (r.service.hostname.as_str(), r))
            .collect();
        let mut endpoints = HashMap::new();
        for r in &services {
            let mut s = r.service.clone();
            s.routing = crate::traffic::routing(&snap.config, &s, &by_host).map(Box::new);
            let needs: Vec<String> = match &s.routing {
                Some(routing) => routing.backends.iter().map(|b| b.host.clone()).collect(),
                None => vec![s.hostname.clone()],
            };
            for host in &needs {
                endpoints.entry(host.clone()).or_insert_with(|| {
                    let list = by_host.get(host.as_str()).map(|r| r.endpoints.clone());
                    entry(
                        Decoded::Endpoints(Endpoints {
                            host: host.clone(),
                            endpoints: list.unwrap_or_default(),
                        }),
                        Vec::new(),
                    )
                });
            }
            let e = Entry {
                export_to: r.export_to.clone(),
                ..entry(Decoded::Address(Resolved::Service(s)), needs)
            };
            for a in &r.addresses {
                by_addr.entry(*a).or_insert_with(|| e.clone());
            }
        }
        Self {
            version: snap.version,
            by_addr,
            endpoints,
        }
    }

    /// What a subscription name resolves to (`None`: does not exist).
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.by_addr.get(&name.parse().ok()?)
    }

    /// The endpoints of `host`, if a routed-to host.
    pub fn endpoints(&self, host: &str) -> Option<&Entry> {
        self.endpoints.get(host)
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

fn selects(svc: &cluster::Service, pod: &cluster::Pod) -> bool {
    !svc.selector.is_empty()
        && pod.namespace == svc.namespace
        && cluster::labels_match(&svc.selector, &pod.labels)
}

fn service(svc: &cluster::Service, pods: &[&cluster::Pod], trust_domain: &str) -> Registered {
    let mut endpoints: Vec<Endpoint> = pods
        .iter()
        .filter(|p| p.ready && selects(svc, p))
        .filter_map(|p| {
            let ip = p.ip?;
            let ports = svc
                .ports
                .iter()
                .filter_map(|sp| {
                    let target = match &sp.target_port {
                        TargetPort::Number(n) => Some(*n),
                        TargetPort::Name(n) => p.named_ports.get(n).copied(),
                    }?;
                    Some((sp.port, target))
                })
                .collect();
            Some(Endpoint {
                workload: workload(p, ip, trust_domain),
                ports,
            })
        })
        .collect();
    endpoints.sort_by_key(|e| e.workload.address);
    let service = Service {
        name: svc.name.clone(),
        namespace: svc.namespace.clone(),
        hostname: format!("{}.{}.svc.cluster.local", svc.name, svc.namespace),
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
        endpoints,
        addresses: vec![svc.cluster_ip],
        export_to: export_to(svc.export_to.as_ref(), &svc.namespace),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, app: &str, ready: bool, meshed: bool) -> cluster::Pod {
        cluster::Pod {
            name: name.into(),
            namespace: "shop".into(),
            labels: [("app".to_string(), app.to_string())].into(),
            service_account: app.into(),
            ip: Some(ip.parse().unwrap()),
            meshed,
            ready,
            named_ports: [("web".to_string(), 9090)].into(),
            owner: app.into(),
            app_exited: false,
        }
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            version: 7,
            pods: vec![
                pod("orders-b", "10.244.0.9", "orders", true, true),
                pod("orders-a", "10.244.0.8", "orders", true, false),
                pod("orders-c", "10.244.0.10", "orders", false, true),
                pod("pay-a", "10.244.0.11", "payments", true, true),
            ],
            services: vec![cluster::Service {
                name: "orders".into(),
                namespace: "shop".into(),
                cluster_ip: "10.96.0.5".parse().unwrap(),
                export_to: None,
                selector: [("app".to_string(), "orders".to_string())].into(),
                ports: vec![
                    cluster::ServicePort {
                        name: "http".into(),
                        port: 80,
                        target_port: TargetPort::Name("web".into()),
                        app_protocol: None,
                    },
                    cluster::ServicePort {
                        name: "db".into(),
                        port: 5432,
                        target_port: TargetPort::Number(5432),
                        app_protocol: Some("tcp".into()),
                    },
                ],
            }],
            config: Default::default(),
        }
    }

    #[test]
    fn service_has_ready_selected_endpoints_in_order() {
        let idx = Index::build(&snapshot(), "cluster.local");
        let Decoded::Address(Resolved::Service(s)) = &*idx.get("10.96.0.5").unwrap().resource
        else {
            panic!()
        };
        let Decoded::Endpoints(e) = &*idx.endpoints(&s.hostname).unwrap().resource else {
            panic!()
        };
        let names: Vec<_> = e
            .endpoints
            .iter()
            .map(|e| e.workload.name.as_str())
            .collect();
        assert_eq!(names, ["orders-a", "orders-b"]);
        assert_eq!(e.endpoints[0].ports, [(80, 9090), (5432, 5432)].into());
        assert_eq!(e.endpoints[0].workload.identity, None);
        assert_eq!(
            e.endpoints[1]
                .workload
                .identity
                .as_ref()
                .map(ToString::to_string)
                .as_deref(),
            Some("spiffe://cluster.local/ns/shop/sa/orders")
        );
        assert_eq!(s.port(80).unwrap().protocol, AppProtocol::Http);
        assert_eq!(s.port(5432).unwrap().protocol, AppProtocol::Tcp);
        assert_eq!(s.hostname, "orders.shop.svc.cluster.local");
    }

    #[test]
    fn pods_resolve_and_unknown_addresses_do_not() {
        let idx = Index::build(&snapshot(), "cluster.local");
        assert!(
            matches!(&*idx.get("10.244.0.11").unwrap().resource, Decoded::Address(Resolved::Workload(w)) if w.name == "pay-a")
        );
        assert!(idx.get("10.1.2.3").is_none());
        assert!(idx.get("not-an-ip").is_none());
    }

    #[test]
    fn version_changes_with_content_only_and_endpoints_alone() {
        const HOST: &str = "orders.shop.svc.cluster.local";
        let a = Index::build(&snapshot(), "cluster.local");
        let b = Index::build(&snapshot(), "cluster.local");
        assert_eq!(
            a.get("10.96.0.5").unwrap().version,
            b.get("10.96.0.5").unwrap().version
        );
        assert_eq!(&*a.get("10.96.0.5").unwrap().needs, [HOST]);
        let mut snap = snapshot();
        snap.pods[2].ready = true;
        let c = Index::build(&snap, "cluster.local");
        // A pod became ready: the endpoints change, the Service does not.
        assert_ne!(
            a.endpoints(HOST).unwrap().version,
            c.endpoints(HOST).unwrap().version
        );
        assert_eq!(
            a.get("10.96.0.5").unwrap().version,
            c.get("10.96.0.5").unwrap().version
        );
        assert_eq!(
            a.get("10.244.0.11").unwrap().version,
            c.get("10.244.0.11").unwrap().version
        );
    }
}
