//! What a store tells the [`Indexer`](super::Indexer): one object's
//! change at a time, in batches. The Kubernetes store turns each watch
//! event into one; the local runtime, which streams whole snapshots,
//! sends the difference between two ([`Change::between`]).

use std::collections::{BTreeSet, HashMap};

use api::cluster::{EndpointSlice, MeshConfig, Pod, Service, Snapshot};
use tokio::sync::mpsc;

/// An object's namespace and name.
pub type Key = (String, String);

/// The kinds of object a relist replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Pods.
    Pods,
    /// Services.
    Services,
    /// EndpointSlices.
    Slices,
}

/// One change.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A pod is now this (`None`: gone, or not one the mesh reads).
    Pod(Key, Option<Pod>),
    /// A Service is now this (`None`: gone, or without a cluster IP).
    Service(Key, Option<Service>),
    /// An EndpointSlice (keyed by its own name) is now this.
    Slice(Key, Option<EndpointSlice>),
    /// The mesh resources, all of them (they are few, and one can change
    /// the routing of any Service).
    Config(Box<MeshConfig>),
    /// A watch was relisted: of `Kind`, only the objects in the set
    /// exist.
    Relisted(Kind, BTreeSet<Key>),
}

impl Change {
    /// The changes that turn `prev` into `next`.
    pub fn between(prev: &Snapshot, next: &Snapshot) -> Vec<Change> {
        let mut out = Vec::new();
        diff(
            &prev.pods,
            &next.pods,
            |p| (p.namespace.clone(), p.name.clone()),
            Change::Pod,
            &mut out,
        );
        diff(
            &prev.services,
            &next.services,
            |s| (s.namespace.clone(), s.name.clone()),
            Change::Service,
            &mut out,
        );
        if prev.config != next.config {
            out.push(Change::Config(Box::new(next.config.clone())));
        }
        out
    }
}

fn diff<T: Clone + PartialEq>(
    prev: &[T],
    next: &[T],
    key: impl Fn(&T) -> Key,
    change: impl Fn(Key, Option<T>) -> Change,
    out: &mut Vec<Change>,
) {
    let before: HashMap<Key, &T> = prev.iter().map(|o| (key(o), o)).collect();
    let mut seen = BTreeSet::new();
    for o in next {
        let k = key(o);
        if before.get(&k) != Some(&o) {
            out.push(change(k.clone(), Some(o.clone())));
        }
        seen.insert(k);
    }
    for k in before.into_keys().filter(|k| !seen.contains(k)) {
        out.push(change(k, None));
    }
}

/// Where a store sends its batches of changes.
#[derive(Clone, Debug)]
pub struct Feed(mpsc::UnboundedSender<Vec<Change>>);

/// Where the indexer reads them.
pub type Changes = mpsc::UnboundedReceiver<Vec<Change>>;

/// A feed and its reader.
pub fn feed() -> (Feed, Changes) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Feed(tx), rx)
}

impl Feed {
    /// Sends a batch; `false` once the indexer is gone.
    pub fn send(&self, batch: Vec<Change>) -> bool {
        batch.is_empty() || self.0.send(batch).is_ok()
    }
}
