//! On-demand discovery: the first connection to an address subscribes to
//! it; the controller's answers fill a cache that the data path reads
//! without locks. The cache survives controller outages.
//!
//! A Service arrives with the endpoints of every host it routes to, as
//! resources of their own; when only endpoints change, the routers that
//! use them are recompiled from the routing already held.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use api::discovery::{Decoded, Resolved, endpoints_host};
use api::proto::discovery_client::DiscoveryClient;
use api::proto::{DiscoveryRequest, DiscoveryResponse, Node, ResourceError};
use arc_swap::ArcSwap;
use common::backoff::Backoff;
use common::tls::Identity;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::control::{self, ControllerAddr};
use crate::traffic::{EndpointsByHost, Router, state};

/// A resolved address plus the data path's per-target state.
#[derive(Debug)]
pub struct Target {
    /// What the controller said.
    pub resolved: Resolved,
    /// Content version.
    pub version: String,
    /// The compiled routing (HTTP and opaque).
    pub router: Arc<Router>,
}

impl Target {
    /// The service it is, as metrics name it (a pod's address names
    /// itself).
    pub fn service_ref(&self) -> api::peer::ServiceRef {
        match &self.resolved {
            Resolved::Workload(w) => api::peer::ServiceRef {
                host: w.address.to_string(),
                name: w.address.to_string(),
                namespace: w.namespace.clone(),
            },
            Resolved::Service(svc) => api::peer::ServiceRef {
                host: svc.hostname.clone(),
                name: svc.name.clone(),
                namespace: svc.namespace.clone(),
            },
        }
    }
}

/// Endpoints tried for one connection or request when connects fail.
pub const ATTEMPTS: usize = 3;

/// An address's state in the cache.
#[derive(Debug, Clone)]
pub enum Slot {
    /// Asked for, no answer yet.
    Pending,
    /// Known to the mesh.
    Known {
        /// The target.
        target: Arc<Target>,
    },
    /// Not in the mesh: pass through.
    Absent,
}

/// What the data path does with an address.
pub enum Lookup {
    /// A mesh service or workload.
    Mesh(Arc<Target>),
    /// Outside the mesh (or unknown while the controller is away).
    Passthrough,
}

/// What the controller told this proxy.
#[derive(Debug, Clone, Default)]
pub struct Cache {
    /// By subscribed address.
    pub addresses: HashMap<IpAddr, Slot>,
    /// The endpoints of the hosts the known Services route to.
    pub endpoints: EndpointsByHost,
}

/// The cache and the handle to the stream task.
pub struct Discovery {
    cache: ArcSwap<Cache>,
    generation: watch::Sender<u64>,
    subscribe: mpsc::UnboundedSender<IpAddr>,
    connected: AtomicBool,
    synced_once: AtomicBool,
    wait: Duration,
    /// Per-destination state (outlier detection, pool limits, retry
    /// budgets, requests in flight), kept across updates.
    state: state::Registry,
    /// The controller's system version of the last response applied.
    version: std::sync::Mutex<String>,
}

impl Discovery {
    /// Starts the stream task.
    pub fn start(
        ctl: ControllerAddr,
        ident: Arc<Identity>,
        node: Node,
        wait: Duration,
    ) -> Arc<Self> {
        let (tx, rx) = mpsc::unbounded_channel();
        let d = Arc::new(Self {
            cache: ArcSwap::from_pointee(Cache::default()),
            generation: watch::channel(0).0,
            subscribe: tx,
            connected: AtomicBool::new(false),
            synced_once: AtomicBool::new(false),
            wait,
            state: state::Registry::default(),
            version: std::sync::Mutex::default(),
        });
        tokio::spawn(stream_loop(d.clone(), ctl, ident, node, rx));
        d
    }

    /// A cache without a controller, filled by [`Self::apply`] (tests).
    #[cfg(test)]
    pub fn offline(wait: Duration) -> Arc<Self> {
        Arc::new(Self {
            cache: ArcSwap::from_pointee(Cache::default()),
            generation: watch::channel(0).0,
            subscribe: mpsc::unbounded_channel().0,
            connected: AtomicBool::new(false),
            synced_once: AtomicBool::new(false),
            wait,
            state: state::Registry::default(),
            version: std::sync::Mutex::default(),
        })
    }

    /// Ticks on every applied change.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// The controller's system version of the last response applied.
    pub fn version(&self) -> String {
        self.version
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether a stream has ever been established (readiness).
    pub fn synced_once(&self) -> bool {
        self.synced_once.load(Ordering::Relaxed)
    }

    /// Whether the stream is up now.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// The cache, for `/config_dump`.
    pub fn dump(&self) -> Arc<Cache> {
        self.cache.load_full()
    }

    /// What `ip` resolves to now, without waiting (requests on a kept-alive
    /// connection follow configuration changes through this).
    pub fn current(&self, ip: IpAddr) -> Option<Arc<Target>> {
        match self.cache.load().addresses.get(&ip) {
            Some(Slot::Known { target }) => Some(target.clone()),
            _ => None,
        }
    }

    /// Resolves `ip`, subscribing on first use and waiting a bounded time
    /// for the answer.
    pub async fn lookup(&self, ip: IpAddr) -> Lookup {
        let mut gen_rx = self.generation.subscribe();
        let deadline = tokio::time::Instant::now() + self.wait;
        let mut asked = false;
        loop {
            match self.cache.load().addresses.get(&ip) {
                Some(Slot::Known { target }) => return Lookup::Mesh(target.clone()),
                Some(Slot::Absent) => return Lookup::Passthrough,
                Some(Slot::Pending) => {}
                None if !asked => {
                    let _ = self.subscribe.send(ip);
                    asked = true;
                }
                None => {}
            }
            if tokio::time::timeout_at(deadline, gen_rx.changed())
                .await
                .is_err()
            {
                tracing::warn!(%ip, "no answer from discovery in time; passing through");
                return Lookup::Passthrough;
            }
        }
    }

    fn update(&self, f: impl FnOnce(&mut Cache)) {
        let mut next = Cache::clone(&self.cache.load());
        f(&mut next);
        self.cache.store(Arc::new(next));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Applies a response; returns the resources refused and why (the
    /// others are applied, the refused ones keep their previous state).
    pub(crate) fn apply(&self, resp: &DiscoveryResponse) -> Vec<ResourceError> {
        let mut errors = Vec::new();
        let mut refuse = |name: &str, error: String| {
            errors.push(ResourceError {
                name: name.to_string(),
                error,
            })
        };
        let mut addresses = Vec::new();
        let mut endpoints = Vec::new();
        for r in &resp.resources {
            match api::discovery::decode(r) {
                Ok(Decoded::Endpoints(e)) => endpoints.push(e),
                Ok(Decoded::Address(resolved)) => match r.name.parse::<IpAddr>() {
                    Ok(ip) => addresses.push((ip, resolved, r)),
                    Err(_) => refuse(&r.name, "name is not an IP address".into()),
                },
                Err(e) => refuse(&r.name, e.to_string()),
            }
        }
        self.update(|cache| {
            let mut changed: Vec<String> = Vec::new();
            for e in endpoints {
                changed.push(e.host.clone());
                cache.endpoints.insert(e.host, e.endpoints.into());
            }
            for name in &resp.removed {
                if let Some(host) = endpoints_host(name) {
                    cache.endpoints.remove(host);
                    changed.push(host.to_string());
                } else if let Ok(ip) = name.parse() {
                    cache.addresses.insert(ip, Slot::Absent);
                }
            }
            let mut fresh = std::collections::HashSet::new();
            for (ip, resolved, r) in addresses {
                match Router::for_resolved(&resolved, &cache.endpoints, &self.state) {
                    Ok(router) => {
                        let target = Target {
                            router: Arc::new(router),
                            resolved,
                            version: r.version.clone(),
                        };
                        cache.addresses.insert(
                            ip,
                            Slot::Known {
                                target: Arc::new(target),
                            },
                        );
                        fresh.insert(ip);
                    }
                    Err(e) => refuse(&r.name, e),
                }
            }
            if !changed.is_empty() {
                self.reroute(cache, &changed, &fresh);
            }
        });
        // The routing just replaced has let go of what it alone held.
        self.state.sweep();
        if !resp.system_version.is_empty() {
            *self
                .version
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = resp.system_version.clone();
        }
        errors
    }

    /// Recompiles the routers (other than `fresh` ones) that use the
    /// endpoints of a `changed` host.
    fn reroute(
        &self,
        cache: &mut Cache,
        changed: &[String],
        fresh: &std::collections::HashSet<IpAddr>,
    ) {
        let Cache {
            addresses,
            endpoints,
        } = cache;
        for (ip, slot) in addresses.iter_mut() {
            let Slot::Known { target } = slot else {
                continue;
            };
            let Resolved::Service(svc) = &target.resolved else {
                continue;
            };
            if fresh.contains(ip)
                || !Router::hosts(svc)
                    .iter()
                    .any(|h| changed.iter().any(|c| c == h))
            {
                continue;
            }
            match Router::compile(svc, endpoints, &self.state) {
                Ok(router) => {
                    *target = Arc::new(Target {
                        router: Arc::new(router),
                        resolved: target.resolved.clone(),
                        version: target.version.clone(),
                    });
                }
                Err(e) => {
                    tracing::warn!(%ip, error = %e, "routing kept: new endpoints do not compile")
                }
            }
        }
    }
}

async fn stream_loop(
    d: Arc<Discovery>,
    ctl: ControllerAddr,
    ident: Arc<Identity>,
    node: Node,
    mut subs: mpsc::UnboundedReceiver<IpAddr>,
) {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        // Discovery needs our certificate: wait for the first one.
        if ident.credentials().is_some() {
            match run_stream(&d, &ctl, &ident, &node, &mut subs).await {
                Ok(()) => backoff.reset(),
                Err(e) => tracing::warn!(error = %e, "discovery stream ended"),
            }
            d.connected.store(false, Ordering::Relaxed);
        }
        // Pending subscriptions made while away are sent on reconnect.
        while let Ok(ip) = subs.try_recv() {
            d.update(|c| {
                c.addresses.entry(ip).or_insert(Slot::Pending);
            });
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

async fn run_stream(
    d: &Arc<Discovery>,
    ctl: &ControllerAddr,
    ident: &Arc<Identity>,
    node: &Node,
    subs: &mut mpsc::UnboundedReceiver<IpAddr>,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(64);
    let known: Vec<String> = d
        .cache
        .load()
        .addresses
        .keys()
        .map(ToString::to_string)
        .collect();
    tx.send(DiscoveryRequest {
        node: Some(node.clone()),
        subscribe: known,
        ..Default::default()
    })
    .await?;
    let mut client = DiscoveryClient::new(control::channel(ctl, ident)?);
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    d.connected.store(true, Ordering::Relaxed);
    d.synced_once.store(true, Ordering::Relaxed);
    tracing::info!(controller = %ctl.addr, "discovery stream up");
    loop {
        tokio::select! {
            ip = subs.recv() => {
                let Some(ip) = ip else { return Ok(()) };
                if d.cache.load().addresses.contains_key(&ip) {
                    continue;
                }
                d.update(|c| { c.addresses.insert(ip, Slot::Pending); });
                tx.send(DiscoveryRequest { subscribe: vec![ip.to_string()], ..Default::default() }).await?;
            }
            msg = inbound.message() => {
                let Some(resp) = msg? else { return Ok(()) };
                let errors = d.apply(&resp);
                let detail = errors
                    .iter()
                    .map(|e| format!("{}: {}", e.name, e.error))
                    .collect::<Vec<_>>()
                    .join("; ");
                if !errors.is_empty() {
                    tracing::warn!(nonce = %resp.nonce, error = %detail, "NACK");
                }
                tx.send(DiscoveryRequest {
                    response_nonce: resp.nonce.clone(),
                    version_info: resp.system_version.clone(),
                    error_detail: detail,
                    errors,
                    ..Default::default()
                }).await?;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use api::discovery::{Endpoint, Endpoints, Service, WORKLOAD_TYPE, encode};
    use api::proto::{Resource, Workload};
    use prost::Message;

    use super::*;

    fn discovery() -> Discovery {
        let (tx, _rx) = mpsc::unbounded_channel();
        Discovery {
            cache: ArcSwap::from_pointee(Cache::default()),
            generation: watch::channel(0).0,
            subscribe: tx,
            connected: AtomicBool::new(true),
            synced_once: AtomicBool::new(true),
            wait: Duration::from_millis(50),
            state: state::Registry::default(),
            version: std::sync::Mutex::default(),
        }
    }

    fn wire_workload(name: &str, address: &str) -> Workload {
        Workload {
            name: name.into(),
            namespace: "ns".into(),
            address: address.into(),
            ..Default::default()
        }
    }

    fn resource(w: &Workload) -> Resource {
        Resource {
            name: w.address.clone(),
            version: "1".into(),
            type_url: WORKLOAD_TYPE.into(),
            body: w.encode_to_vec().into(),
        }
    }

    fn workload(name: &str, address: &str) -> Resource {
        resource(&wire_workload(name, address))
    }

    #[tokio::test(start_paused = true)]
    async fn applies_good_resources_and_nacks_bad_ones() {
        let d = discovery();
        let bad = resource(&Workload {
            identity: "not-spiffe".into(),
            ..wire_workload("b", "10.0.0.2")
        });
        let resp = DiscoveryResponse {
            resources: vec![workload("a", "10.0.0.1"), bad],
            removed: vec!["10.0.0.3".into()],
            nonce: "1".into(),
            ..Default::default()
        };
        let nack = d.apply(&resp);
        assert_eq!(nack.len(), 1, "{nack:?}");
        assert_eq!(nack[0].name, "10.0.0.2");
        assert!(nack[0].error.starts_with("identity"), "{nack:?}");
        assert!(matches!(
            d.lookup("10.0.0.1".parse().unwrap()).await,
            Lookup::Mesh(_)
        ));
        assert!(matches!(
            d.lookup("10.0.0.3".parse().unwrap()).await,
            Lookup::Passthrough
        ));
        // Unanswered: passthrough after the bounded wait.
        assert!(matches!(
            d.lookup("10.0.0.2".parse().unwrap()).await,
            Lookup::Passthrough
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lookup_waits_for_the_answer() {
        let d = Arc::new(discovery());
        let d2 = d.clone();
        let waiter = tokio::spawn(async move { d2.lookup("10.0.0.1".parse().unwrap()).await });
        tokio::time::sleep(Duration::from_millis(10)).await;
        d.apply(&DiscoveryResponse {
            resources: vec![workload("a", "10.0.0.1")],
            ..Default::default()
        });
        assert!(matches!(waiter.await.unwrap(), Lookup::Mesh(_)));
    }

    #[test]
    fn a_current_lookup_never_waits_or_subscribes() {
        let d = discovery();
        assert!(d.current("10.0.0.1".parse().unwrap()).is_none());
        d.apply(&DiscoveryResponse {
            resources: vec![workload("a", "10.0.0.1")],
            ..Default::default()
        });
        let t = d.current("10.0.0.1".parse().unwrap()).unwrap();
        assert!(matches!(&t.resolved, Resolved::Workload(w) if w.name == "a"));
        // Every known target carries its compiled routing.
        assert_eq!(t.router.routes.len(), 1);
    }

    #[test]
    fn new_endpoints_reroute_the_services_that_use_them() {
        let d = discovery();
        let host = "web.ns.svc.cluster.local";
        let svc = Service {
            name: "web".into(),
            namespace: "ns".into(),
            hostname: host.into(),
            addresses: vec!["10.96.0.1".parse().unwrap()],
            ports: vec![],
            routing: None,
        };
        let eps = |ips: &[&str]| Endpoints {
            host: host.into(),
            endpoints: ips
                .iter()
                .map(|ip| Endpoint {
                    workload: api::discovery::Workload::try_from(&wire_workload("w", ip)).unwrap(),
                    ports: Default::default(),
                })
                .collect(),
        };
        let members = |d: &Discovery| {
            let t = d.current("10.96.0.1".parse().unwrap()).unwrap();
            t.router.backends[host].endpoints.len()
        };
        d.apply(&DiscoveryResponse {
            resources: vec![
                encode(
                    api::discovery::endpoints_name(host),
                    &Decoded::Endpoints(eps(&["10.244.0.1"])),
                ),
                encode(
                    "10.96.0.1".into(),
                    &Decoded::Address(Resolved::Service(svc)),
                ),
            ],
            ..Default::default()
        });
        assert_eq!(members(&d), 1);
        let version = d
            .current("10.96.0.1".parse().unwrap())
            .unwrap()
            .version
            .clone();
        // The endpoints alone change: the Service keeps its version.
        d.apply(&DiscoveryResponse {
            resources: vec![encode(
                api::discovery::endpoints_name(host),
                &Decoded::Endpoints(eps(&["10.244.0.1", "10.244.0.2"])),
            )],
            ..Default::default()
        });
        assert_eq!(members(&d), 2);
        assert_eq!(
            d.current("10.96.0.1".parse().unwrap()).unwrap().version,
            version
        );
        d.apply(&DiscoveryResponse {
            removed: vec![api::discovery::endpoints_name(host)],
            ..Default::default()
        });
        assert_eq!(members(&d), 0);
    }
}
