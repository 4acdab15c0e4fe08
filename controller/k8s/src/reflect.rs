//! Reflectors: a watch of one kind, cached in a reader, whose events are
//! either turned into index changes one object at a time, or wake the
//! task that rebuilds what depends on the whole kind (the mesh config and
//! the verdicts).

use std::collections::BTreeSet;
use std::sync::Arc;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, Store as Reader};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use mesh_controller_core::index::{Change, Key, Kind};
use tokio::sync::{Notify, mpsc};

/// Where a reflector's events go.
pub enum Sink<K> {
    /// Nowhere: only its reader is read.
    None,
    /// They wake whoever waits on it.
    Wake(Arc<Notify>),
    /// Each becomes a change.
    Changes(Translate<K>),
}

/// Turns a kind's events into changes.
pub struct Translate<K> {
    kind: Kind,
    tx: mpsc::UnboundedSender<Vec<Change>>,
    to: fn(Key, Option<&K>) -> Change,
    /// The keys listed since the last `Init`.
    listing: Option<BTreeSet<Key>>,
}

impl<K: Resource> Translate<K> {
    /// Changes of `kind`, made by `to` (`None`: the object is gone), sent
    /// to `tx`.
    pub fn new(
        kind: Kind,
        tx: mpsc::UnboundedSender<Vec<Change>>,
        to: fn(Key, Option<&K>) -> Change,
    ) -> Self {
        Self {
            kind,
            tx,
            to,
            listing: None,
        }
    }

    fn on(&mut self, event: &watcher::Event<K>) {
        let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
        let change = match event {
            watcher::Event::Apply(o) => (self.to)(key(o), Some(o)),
            watcher::Event::Delete(o) => (self.to)(key(o), None),
            watcher::Event::Init => {
                self.listing = Some(BTreeSet::new());
                return;
            }
            watcher::Event::InitApply(o) => {
                self.listing.get_or_insert_default().insert(key(o));
                (self.to)(key(o), Some(o))
            }
            watcher::Event::InitDone => {
                Change::Relisted(self.kind, self.listing.take().unwrap_or_default())
            }
        };
        let _ = self.tx.send(vec![change]);
    }
}

/// A reflector of `K` in every namespace.
pub fn reflect<K>(client: &Client, config: watcher::Config, sink: Sink<K>) -> Reader<K>
where
    K: Resource<DynamicType = ()>
        + k8s_openapi::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    spawn(
        <K as k8s_openapi::Resource>::KIND,
        writer,
        Api::<K>::all(client.clone()),
        config,
        sink,
    );
    reader
}

/// A reflector of the dynamic kind `ar` in every namespace.
pub fn reflect_dynamic(
    client: &Client,
    kind: &'static str,
    ar: &ApiResource,
    sink: Sink<DynamicObject>,
) -> Reader<DynamicObject> {
    let writer = reflector::store::Writer::new(ar.clone());
    let reader = writer.as_reader();
    let api = Api::<DynamicObject>::all_with(client.clone(), ar);
    spawn(kind, writer, api, watcher::Config::default(), sink);
    reader
}

fn spawn<K>(
    kind: &'static str,
    writer: reflector::store::Writer<K>,
    api: Api<K>,
    config: watcher::Config,
    mut sink: Sink<K>,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
{
    tokio::spawn(async move {
        let stream = watcher(api, config).default_backoff().reflect(writer);
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(e) => match &mut sink {
                    Sink::None => {}
                    Sink::Wake(n) => n.notify_one(),
                    Sink::Changes(t) => t.on(&e),
                },
                Err(e) => tracing::warn!(kind, error = %e, "watch failed; retrying"),
            }
        }
    });
}

/// The EndpointSlice API this cluster serves: `discovery.k8s.io/v1`
/// (Kubernetes 1.21 and later), else `v1beta1` (1.17 to 1.24); `None`
/// when neither is.
pub async fn slice_api(client: &Client) -> Option<ApiResource> {
    for version in ["v1", "v1beta1"] {
        let gv = format!("discovery.k8s.io/{version}");
        match client.list_api_group_resources(&gv).await {
            Ok(list) if list.resources.iter().any(|r| r.name == "endpointslices") => {
                return Some(ApiResource {
                    group: "discovery.k8s.io".into(),
                    version: version.into(),
                    api_version: gv,
                    kind: "EndpointSlice".into(),
                    plural: "endpointslices".into(),
                });
            }
            Ok(_) => {}
            Err(e) => tracing::debug!(%gv, error = %e, "not served"),
        }
    }
    None
}
