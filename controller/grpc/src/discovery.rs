//! `mesh.v1.Discovery`: on-demand, incremental config streams.
//!
//! A proxy subscribes to the addresses its workload connects to. Each
//! response carries only what changed for that proxy since it was last
//! told (a new content version, or "does not exist" in `removed`), with a
//! nonce the proxy ACKs, or NACKs with the reason per resource while
//! keeping its previous state. Each stream records what it sent and what
//! the proxy answered in the [`sync`] registry (`meshctl proxy-status`).
//!
//! A proxy is served only what its identity may see: the connection's
//! certificate and source address decide, not what the proxy claims. A
//! workload's policy goes to that workload's own proxy only, and a Service
//! that is not exported to the proxy's namespace does not exist for it.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

use api::discovery::{endpoints_host, endpoints_name};
use api::proto::discovery_server::Discovery;
use api::proto::{DiscoveryRequest, DiscoveryResponse, Node, Resource};
use api::spiffe::SpiffeId;
use api::sync::{ProxySync, Refusal};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::PeerInfo;
use mesh_controller_core::index::{Entry, Index};
use mesh_controller_core::sync;

/// The discovery service.
pub struct DiscoveryService {
    index: watch::Receiver<Arc<Index>>,
    sync: Arc<sync::Registry>,
    /// This controller instance's name, shown by `proxy-status`.
    instance: String,
}

impl DiscoveryService {
    /// Serves from the index kept up to date in `index`, recording each
    /// stream's sync state in `sync`.
    pub fn new(
        index: watch::Receiver<Arc<Index>>,
        sync: Arc<sync::Registry>,
        instance: String,
    ) -> Self {
        Self {
            index,
            sync,
            instance,
        }
    }
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type StreamStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let (identity, addr) = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| Some((p.identity.clone()?, p.addr)))
            .ok_or_else(|| Status::unauthenticated("discovery needs a workload certificate"))?;
        let (tx, rx) = mpsc::channel(16);
        let session = Session::new(identity, addr.ip());
        let sync = Opened {
            registry: self.sync.clone(),
            instance: self.instance.clone(),
        };
        tokio::spawn(session.run(req.into_inner(), self.index.clone(), tx, sync));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// Where a stream records its sync state, once the proxy says who it is.
struct Opened {
    registry: Arc<sync::Registry>,
    instance: String,
}

/// What one proxy subscribed to and was last sent: the stream's state,
/// without the stream (the scale bench drives thousands of them).
pub struct Session {
    /// The identity its certificate proves.
    identity: SpiffeId,
    /// The address it connects from (its pod's IP).
    ip: IpAddr,
    subscribed: BTreeSet<String>,
    /// name -> content version sent (`None`: sent as not existing).
    sent: HashMap<String, Option<String>>,
    nonce: u64,
    /// The system version of the last response, for proxies that do not
    /// echo it in their ACK.
    last_sent: Option<(String, String)>,
    sync: Option<sync::Handle>,
}

impl Session {
    /// A session for the proxy with `identity` connecting from `ip`.
    pub fn new(identity: SpiffeId, ip: IpAddr) -> Self {
        Self {
            identity,
            ip,
            subscribed: BTreeSet::new(),
            sent: HashMap::new(),
            nonce: 0,
            last_sent: None,
            sync: None,
        }
    }

    async fn run(
        mut self,
        mut inbound: Streaming<DiscoveryRequest>,
        mut index: watch::Receiver<Arc<Index>>,
        tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
        opened: Opened,
    ) {
        tracing::info!(peer = %self.identity, ip = %self.ip, "proxy connected");
        loop {
            let response = tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => {
                        if self.sync.is_none() {
                            self.sync = Some(opened.registry.open(self.proxy(m.node.as_ref(), &opened.instance)));
                        }
                        let new = self.on_request(m);
                        let idx = index.borrow().clone();
                        self.diff(&idx, &new)
                    }
                    Ok(None) | Err(_) => break,
                },
                changed = index.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let idx = index.borrow_and_update().clone();
                    self.changed(&idx)
                }
            };
            if let Some(r) = response {
                if let Some(s) = &self.sync {
                    s.sent(&r.nonce, &r.system_version);
                }
                if tx.send(Ok(r)).await.is_err() {
                    break;
                }
            }
        }
        tracing::info!(peer = %self.identity, ip = %self.ip, "proxy disconnected");
    }

    /// The sync record of this stream; the pod is named by the proxy, the
    /// identity and address are what the connection proves.
    fn proxy(&self, node: Option<&Node>, instance: &str) -> ProxySync {
        let mut p = ProxySync::opened(
            node.map_or("", |n| n.pod.as_str()),
            node.map_or(self.identity.namespace(), |n| n.namespace.as_str()),
            &self.ip.to_string(),
            &self.identity.to_string(),
            sync::now(),
        );
        p.controller = instance.to_string();
        p
    }

    /// Applies a request; returns the names newly subscribed.
    pub fn on_request(&mut self, m: DiscoveryRequest) -> Vec<String> {
        if !m.response_nonce.is_empty() {
            let version = match (&m.version_info, &self.last_sent) {
                (v, _) if !v.is_empty() => v.clone(),
                (_, Some((nonce, v))) if *nonce == m.response_nonce => v.clone(),
                _ => String::new(),
            };
            if m.error_detail.is_empty() && m.errors.is_empty() {
                tracing::debug!(peer = %self.identity, nonce = %m.response_nonce, "ACK");
                if let Some(s) = &self.sync {
                    s.acked(&m.response_nonce, &version);
                }
            } else {
                tracing::warn!(peer = %self.identity, nonce = %m.response_nonce, error = %m.error_detail, "NACK");
                let mut errors: Vec<Refusal> = m
                    .errors
                    .iter()
                    .map(|e| Refusal {
                        name: e.name.clone(),
                        error: e.error.clone(),
                    })
                    .collect();
                if errors.is_empty() {
                    // An older proxy: one line for the whole response.
                    errors.push(Refusal {
                        name: String::new(),
                        error: m.error_detail.clone(),
                    });
                }
                if let Some(s) = &self.sync {
                    s.nacked(&m.response_nonce, &version, errors);
                }
            }
        }
        for name in m.unsubscribe {
            self.subscribed.remove(&name);
            self.sent.remove(&name);
        }
        let new = m
            .subscribe
            .into_iter()
            .filter(|n| self.subscribed.insert(n.clone()))
            .collect();
        if let Some(s) = &self.sync {
            s.seen(self.subscribed.len());
        }
        new
    }

    /// What this proxy may see of `name`: nothing of a Service not
    /// exported to its namespace, and a workload's policy only when it is
    /// that workload.
    fn visible<'i>(&self, idx: &'i Index, name: &str) -> Option<&'i Entry> {
        idx.get(name)
            .filter(|e| e.visible_to(self.identity.namespace()))
            .map(|e| e.view_for(self.ip, &self.identity))
    }

    /// Adds `name` to the response if what the proxy was last sent of it
    /// is not `current`.
    fn push(
        &mut self,
        name: &str,
        current: Option<&Entry>,
        resources: &mut Vec<Resource>,
        removed: &mut Vec<String>,
    ) {
        let version = current.map(|e| e.version.clone());
        if self.sent.get(name) == Some(&version) {
            return;
        }
        match current {
            Some(e) => resources.push(e.wire(name)),
            None => removed.push(name.to_string()),
        }
        self.sent.insert(name.to_string(), version);
    }

    /// A response with what changed in `idx` for everything subscribed.
    pub fn changed(&mut self, idx: &Index) -> Option<DiscoveryResponse> {
        let all: Vec<String> = self.subscribed.iter().cloned().collect();
        self.diff(idx, &all)
    }

    /// A response with what changed among `names`, and among the
    /// endpoints of the hosts the subscribed Services route to, if
    /// anything did.
    pub fn diff(&mut self, idx: &Index, names: &[String]) -> Option<DiscoveryResponse> {
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        let needed: BTreeSet<&str> = self
            .subscribed
            .iter()
            .filter_map(|n| self.visible(idx, n))
            .flat_map(|e| e.needs.iter().map(String::as_str))
            .collect();
        // Endpoints first: the Services that arrive with them use them.
        for host in &needed {
            self.push(
                &endpoints_name(host),
                idx.endpoints(host),
                &mut resources,
                &mut removed,
            );
        }
        let unneeded: Vec<String> = self
            .sent
            .keys()
            .filter(|n| endpoints_host(n).is_some_and(|h| !needed.contains(h)))
            .cloned()
            .collect();
        for name in unneeded {
            self.sent.remove(&name);
            removed.push(name);
        }
        for name in names {
            let current = self.visible(idx, name);
            self.push(name, current, &mut resources, &mut removed);
        }
        if resources.is_empty() && removed.is_empty() {
            return None;
        }
        self.nonce += 1;
        let r = DiscoveryResponse {
            system_version: idx.version.to_string(),
            nonce: self.nonce.to_string(),
            resources,
            removed,
        };
        self.last_sent = Some((r.nonce.clone(), r.system_version.clone()));
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use api::cluster::{Pod, Snapshot};
    use api::sync::SyncStatus;

    use super::*;

    fn index(version: &str) -> Index {
        let pod = Pod {
            name: "a".into(),
            namespace: "ns".into(),
            labels: [("version".to_string(), version.to_string())].into(),
            service_account: "sa".into(),
            ip: Some("10.244.0.2".parse().unwrap()),
            meshed: true,
            ready: true,
            named_ports: Default::default(),
            owner: "a".into(),
            app_exited: false,
        };
        let sidecar = serde_yaml_ng::from_str(
            "apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: ns}
spec:
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}",
        )
        .unwrap();
        let svc = |name: &str, ip: &str, export_to: Option<&[&str]>| api::cluster::Service {
            name: name.into(),
            namespace: "other".into(),
            cluster_ip: ip.parse().unwrap(),
            selector: Default::default(),
            ports: vec![],
            export_to: export_to.map(|l| l.iter().map(|s| s.to_string()).collect()),
        };
        Index::build(
            &Snapshot {
                version: 1,
                pods: vec![pod],
                services: vec![
                    svc("private", "10.96.0.1", Some(&["."])),
                    svc("shared", "10.96.0.2", Some(&["ns"])),
                    svc("open", "10.96.0.3", None),
                ],
                config: api::cluster::MeshConfig {
                    sidecars: vec![sidecar],
                    ..Default::default()
                },
            },
            "cluster.local",
        )
    }

    fn policy_of(r: &DiscoveryResponse) -> Option<Option<api::proto::WorkloadPolicy>> {
        match api::discovery::decode(&r.resources[0]).unwrap() {
            api::discovery::Decoded::Address(api::discovery::Resolved::Workload(w)) => {
                Some(w.policy.map(|p| *p))
            }
            _ => None,
        }
    }

    #[test]
    fn a_workload_policy_goes_to_its_own_proxy_only() {
        let idx = index("v1");
        let mut own = session("10.244.0.2");
        let new = own.on_request(sub(&["10.244.0.2"]));
        let r = own.diff(&idx, &new).unwrap();
        assert_eq!(
            policy_of(&r).unwrap().unwrap().outbound(),
            api::proto::OutboundMode::RegistryOnly
        );
        // Another pod with the same identity, or the same address with
        // another identity: the workload without its policy.
        let mut other = session("10.244.0.7");
        let new = other.on_request(sub(&["10.244.0.2"]));
        let r = other.diff(&idx, &new).unwrap();
        assert_eq!(policy_of(&r).unwrap(), None, "{r:?}");
        let mut impostor = Session::new(
            SpiffeId::new("cluster.local", "ns", "other").unwrap(),
            "10.244.0.2".parse().unwrap(),
        );
        let new = impostor.on_request(sub(&["10.244.0.2"]));
        let r = impostor.diff(&idx, &new).unwrap();
        assert_eq!(policy_of(&r).unwrap(), None, "{r:?}");
        assert_ne!(own.sent["10.244.0.2"], impostor.sent["10.244.0.2"]);
    }

    #[test]
    fn services_exist_only_where_they_are_exported() {
        let idx = index("v1");
        let mut s = session("10.244.0.2");
        let new = s.on_request(sub(&["10.96.0.1", "10.96.0.2", "10.96.0.3"]));
        let r = s.diff(&idx, &new).unwrap();
        let names: Vec<_> = r.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "endpoints/open.other.svc.cluster.local",
                "endpoints/shared.other.svc.cluster.local",
                "10.96.0.2",
                "10.96.0.3"
            ]
        );
        assert_eq!(r.removed, ["10.96.0.1"]);
    }

    #[test]
    fn sync_state_follows_acks_and_nacks() {
        let registry = Arc::new(sync::Registry::default());
        let mut s = session("10.244.0.2");
        s.sync = Some(registry.open(s.proxy(
            Some(&Node {
                pod: "a".into(),
                namespace: "ns".into(),
                ip: "10.244.0.2".into(),
            }),
            "ctl-1",
        )));
        let idx = index("v1");
        let new = s.on_request(sub(&["10.244.0.2"]));
        let r = s.diff(&idx, &new).unwrap();
        s.sync.as_ref().unwrap().sent(&r.nonce, &r.system_version);
        let p = &registry.list()[0];
        assert_eq!(p.status(), SyncStatus::NeverAcknowledged);
        assert_eq!(p.subscriptions, 1);
        assert_eq!(p.identity, "spiffe://cluster.local/ns/ns/sa/sa");
        s.on_request(DiscoveryRequest {
            response_nonce: r.nonce.clone(),
            ..Default::default()
        });
        let p = &registry.list()[0];
        assert_eq!(p.status(), SyncStatus::Synced);
        assert_eq!(
            p.acked.as_ref().unwrap().version,
            "1",
            "taken from what was sent"
        );
        s.on_request(DiscoveryRequest {
            response_nonce: r.nonce.clone(),
            version_info: "1".into(),
            error_detail: "10.244.0.2: bad".into(),
            errors: vec![api::proto::ResourceError {
                name: "10.244.0.2".into(),
                error: "policy: bad".into(),
            }],
            ..Default::default()
        });
        let p = &registry.list()[0];
        assert_eq!(p.status(), SyncStatus::Error);
        assert_eq!(p.nacked.as_ref().unwrap().errors[0].error, "policy: bad");
        drop(s);
        assert!(registry.list().is_empty(), "a closed stream leaves");
    }

    fn session(ip: &str) -> Session {
        Session::new(
            SpiffeId::new("cluster.local", "ns", "sa").unwrap(),
            ip.parse().unwrap(),
        )
    }

    fn sub(names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            subscribe: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    /// A Service selecting pod `a`, ready or not.
    fn served(ready: bool) -> Index {
        let pod = Pod {
            name: "a".into(),
            namespace: "ns".into(),
            labels: [("app".to_string(), "a".to_string())].into(),
            service_account: "sa".into(),
            ip: Some("10.244.0.2".parse().unwrap()),
            meshed: true,
            ready,
            named_ports: Default::default(),
            owner: "a".into(),
            app_exited: false,
        };
        let svc = api::cluster::Service {
            name: "a".into(),
            namespace: "ns".into(),
            cluster_ip: "10.96.0.9".parse().unwrap(),
            selector: pod.labels.clone(),
            ports: vec![],
            export_to: None,
        };
        Index::build(
            &Snapshot {
                version: u64::from(ready),
                pods: vec![pod],
                services: vec![svc],
                config: Default::default(),
            },
            "cluster.local",
        )
    }

    #[test]
    fn an_endpoint_change_sends_the_endpoints_only() {
        let mut s = session("10.244.0.7");
        let new = s.on_request(sub(&["10.96.0.9"]));
        let r = s.diff(&served(false), &new).unwrap();
        let names: Vec<_> = r.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["endpoints/a.ns.svc.cluster.local", "10.96.0.9"]);
        let all: Vec<_> = s.subscribed.iter().cloned().collect();
        let r = s.diff(&served(true), &all).unwrap();
        let names: Vec<_> = r.resources.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["endpoints/a.ns.svc.cluster.local"]);
        let api::discovery::Decoded::Endpoints(e) =
            api::discovery::decode(&r.resources[0]).unwrap()
        else {
            panic!()
        };
        assert_eq!(e.endpoints.len(), 1);
        // Unsubscribed from the Service: its endpoints go too.
        s.on_request(DiscoveryRequest {
            unsubscribe: vec!["10.96.0.9".into()],
            ..Default::default()
        });
        let r = s.diff(&served(true), &[]).unwrap();
        assert_eq!(r.removed, ["endpoints/a.ns.svc.cluster.local"]);
    }

    #[test]
    fn sends_only_what_changed() {
        let mut s = session("10.244.0.2");
        let idx = index("v1");
        let new = s.on_request(sub(&["10.244.0.2", "10.9.9.9"]));
        let r = s.diff(&idx, &new).unwrap();
        assert_eq!(r.resources.len(), 1);
        assert_eq!(r.removed, ["10.9.9.9"]);
        assert_eq!(r.nonce, "1");
        // Subscribing again to the same names adds nothing.
        let new = s.on_request(sub(&["10.244.0.2"]));
        assert!(new.is_empty());
        // Same index: nothing to send.
        let all: Vec<_> = s.subscribed.iter().cloned().collect();
        assert!(s.diff(&idx, &all).is_none());
        // Changed content: resent, with a new nonce.
        let r = s.diff(&index("v2"), &all).unwrap();
        assert_eq!(r.resources.len(), 1);
        assert_eq!(r.nonce, "2");
        // Unsubscribed names are forgotten.
        s.on_request(DiscoveryRequest {
            unsubscribe: vec!["10.244.0.2".into()],
            ..Default::default()
        });
        assert_eq!(s.subscribed.len(), 1);
    }
}
