//! `mesh.v1.Discovery`: on-demand, incremental config streams.
//!
//! A proxy subscribes to the addresses its workload connects to. Each
//! response carries only what changed for that proxy since it was last
//! told (a new content version, or "does not exist" in `removed`), with a
//! nonce the proxy ACKs, or NACKs with the reason while keeping its
//! previous state.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use api::proto::discovery_server::Discovery;
use api::proto::{DiscoveryRequest, DiscoveryResponse, Resource};
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::PeerInfo;
use crate::index::Index;

/// The discovery service.
pub struct DiscoveryService {
    index: watch::Receiver<Arc<Index>>,
}

impl DiscoveryService {
    /// Serves from the index kept up to date in `index`.
    pub fn new(index: watch::Receiver<Arc<Index>>) -> Self {
        Self { index }
    }
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type StreamStream = ReceiverStream<Result<DiscoveryResponse, Status>>;

    async fn stream(
        &self,
        req: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Self::StreamStream>, Status> {
        let peer = req
            .extensions()
            .get::<PeerInfo>()
            .and_then(|p| Some(format!("{} at {}", p.identity.as_ref()?, p.addr)))
            .ok_or_else(|| Status::unauthenticated("discovery needs a workload certificate"))?;
        let (tx, rx) = mpsc::channel(16);
        let session = Session {
            peer,
            ..Session::default()
        };
        tokio::spawn(session.run(req.into_inner(), self.index.clone(), tx));
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}

/// What one proxy subscribed to and was last sent.
#[derive(Default)]
struct Session {
    peer: String,
    subscribed: BTreeSet<String>,
    /// name -> content version sent (`None`: sent as not existing).
    sent: HashMap<String, Option<String>>,
    nonce: u64,
}

impl Session {
    async fn run(
        mut self,
        mut inbound: Streaming<DiscoveryRequest>,
        mut index: watch::Receiver<Arc<Index>>,
        tx: mpsc::Sender<Result<DiscoveryResponse, Status>>,
    ) {
        tracing::info!(peer = %self.peer, "proxy connected");
        loop {
            let response = tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => {
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
                    let all: Vec<String> = self.subscribed.iter().cloned().collect();
                    self.diff(&idx, &all)
                }
            };
            if let Some(r) = response
                && tx.send(Ok(r)).await.is_err()
            {
                break;
            }
        }
        tracing::info!(peer = %self.peer, "proxy disconnected");
    }

    /// Applies a request; returns the names newly subscribed.
    fn on_request(&mut self, m: DiscoveryRequest) -> Vec<String> {
        if !m.error_detail.is_empty() {
            tracing::warn!(peer = %self.peer, nonce = %m.response_nonce, error = %m.error_detail, "NACK");
        } else if !m.response_nonce.is_empty() {
            tracing::debug!(peer = %self.peer, nonce = %m.response_nonce, "ACK");
        }
        for name in m.unsubscribe {
            self.subscribed.remove(&name);
            self.sent.remove(&name);
        }
        m.subscribe
            .into_iter()
            .filter(|n| self.subscribed.insert(n.clone()))
            .collect()
    }

    /// A response with what changed among `names`, if anything did.
    fn diff(&mut self, idx: &Index, names: &[String]) -> Option<DiscoveryResponse> {
        let mut resources = Vec::new();
        let mut removed = Vec::new();
        for name in names {
            let current = idx.get(name);
            let version = current.map(|e| e.version.clone());
            if self.sent.get(name) == Some(&version) {
                continue;
            }
            match current {
                Some(e) => resources.push(Resource {
                    name: name.clone(),
                    version: e.version.clone(),
                    kind: Some((&*e.resource).into()),
                }),
                None => removed.push(name.clone()),
            }
            self.sent.insert(name.clone(), version);
        }
        if resources.is_empty() && removed.is_empty() {
            return None;
        }
        self.nonce += 1;
        Some(DiscoveryResponse {
            system_version: idx.version.to_string(),
            nonce: self.nonce.to_string(),
            resources,
            removed,
        })
    }
}

#[cfg(test)]
mod tests {
    use api::cluster::{Pod, Snapshot};

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
        };
        Index::build(
            &Snapshot {
                version: 1,
                pods: vec![pod],
                services: vec![],
                config: Default::default(),
            },
            "cluster.local",
        )
    }

    fn sub(names: &[&str]) -> DiscoveryRequest {
        DiscoveryRequest {
            subscribe: names.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    #[test]
    fn sends_only_what_changed() {
        let mut s = Session::default();
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
