//! On-demand discovery: the first connection to an address subscribes to
//! it; the controller's answers fill a cache that the data path reads
//! without locks. The cache survives controller outages.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use api::discovery::Resolved;
use api::proto::discovery_client::DiscoveryClient;
use api::proto::{DiscoveryRequest, DiscoveryResponse, Node, ResourceError};
use arc_swap::ArcSwap;
use common::backoff::Backoff;
use common::tls::Identity;
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use crate::control::{self, ControllerAddr};
use crate::traffic::{Router, state};

/// A resolved address plus the data path's per-target state.
#[derive(Debug, Serialize)]
pub struct Target {
    /// What the controller said.
    pub resolved: Resolved,
    /// Content version.
    pub version: String,
    /// The compiled routing (HTTP and opaque).
    #[serde(skip)]
    pub router: Arc<Router>,
}

/// Endpoints tried for one connection or request when connects fail.
pub const ATTEMPTS: usize = 3;

/// An address's state in the cache.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "state", rename_all = "lowercase")]
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

/// The cache and the handle to the stream task.
pub struct Discovery {
    cache: ArcSwap<HashMap<IpAddr, Slot>>,
    generation: watch::Sender<u64>,
    subscribe: mpsc::UnboundedSender<IpAddr>,
    connected: AtomicBool,
    synced_once: AtomicBool,
    wait: Duration,
    /// Per-destination state (outlier detection, pool limits, retry
    /// budgets, requests in flight), kept across updates.
    state: state::Registry,
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
            cache: ArcSwap::from_pointee(HashMap::new()),
            generation: watch::channel(0).0,
            subscribe: tx,
            connected: AtomicBool::new(false),
            synced_once: AtomicBool::new(false),
            wait,
            state: state::Registry::default(),
        });
        tokio::spawn(stream_loop(d.clone(), ctl, ident, node, rx));
        d
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
    pub fn dump(&self) -> Arc<HashMap<IpAddr, Slot>> {
        self.cache.load_full()
    }

    /// What `ip` resolves to now, without waiting (requests on a kept-alive
    /// connection follow configuration changes through this).
    pub fn current(&self, ip: IpAddr) -> Option<Arc<Target>> {
        match self.cache.load().get(&ip) {
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
            match self.cache.load().get(&ip) {
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

    fn update(&self, f: impl FnOnce(&mut HashMap<IpAddr, Slot>)) {
        let mut next = HashMap::clone(&self.cache.load());
        f(&mut next);
        self.cache.store(Arc::new(next));
        self.generation.send_modify(|g| *g += 1);
    }

    /// Applies a response; returns the resources refused and why (the
    /// others are applied, the refused ones keep their previous state).
    fn apply(&self, resp: &DiscoveryResponse) -> Vec<ResourceError> {
        let mut errors = Vec::new();
        let mut refuse = |name: &str, error: String| {
            errors.push(ResourceError {
                name: name.to_string(),
                error,
            })
        };
        self.update(|cache| {
            for r in &resp.resources {
                let Ok(ip) = r.name.parse::<IpAddr>() else {
                    refuse(&r.name, "name is not an IP address".into());
                    continue;
                };
                match Resolved::try_from(r)
                    .map_err(|e| e.to_string())
                    .and_then(|resolved| {
                        Ok(Target {
                            router: Arc::new(Router::for_resolved(&resolved, &self.state)?),
                            resolved,
                            version: r.version.clone(),
                        })
                    }) {
                    Ok(target) => {
                        cache.insert(
                            ip,
                            Slot::Known {
                                target: Arc::new(target),
                            },
                        );
                    }
                    Err(e) => refuse(&r.name, e),
                }
            }
            for name in &resp.removed {
                if let Ok(ip) = name.parse() {
                    cache.insert(ip, Slot::Absent);
                }
            }
        });
        // The routing just replaced has let go of what it alone held.
        self.state.sweep();
        errors
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
                c.entry(ip).or_insert(Slot::Pending);
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
    let known: Vec<String> = d.cache.load().keys().map(ToString::to_string).collect();
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
                if d.cache.load().contains_key(&ip) {
                    continue;
                }
                d.update(|c| { c.insert(ip, Slot::Pending); });
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
    use api::proto::{Resource, Workload, resource::Kind};

    use super::*;

    fn discovery() -> Discovery {
        let (tx, _rx) = mpsc::unbounded_channel();
        Discovery {
            cache: ArcSwap::from_pointee(HashMap::new()),
            generation: watch::channel(0).0,
            subscribe: tx,
            connected: AtomicBool::new(true),
            synced_once: AtomicBool::new(true),
            wait: Duration::from_millis(50),
            state: state::Registry::default(),
        }
    }

    fn workload(name: &str, address: &str) -> Resource {
        Resource {
            name: address.into(),
            version: "1".into(),
            kind: Some(Kind::Workload(Workload {
                name: name.into(),
                namespace: "ns".into(),
                address: address.into(),
                ..Default::default()
            })),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn applies_good_resources_and_nacks_bad_ones() {
        let d = discovery();
        let mut bad = workload("b", "10.0.0.2");
        if let Some(Kind::Workload(w)) = &mut bad.kind {
            w.identity = "not-spiffe".into();
        }
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
}
