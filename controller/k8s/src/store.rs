//! The Kubernetes store: reflectors for Pods, Services, Namespaces and
//! every mesh kind, a snapshot published after each burst of changes, and
//! token reviews by the API server.

use std::sync::Arc;
use std::time::Duration;

use api::cluster::{MeshConfig, Snapshot, TokenReview};
use futures_util::StreamExt;
use k8s_openapi::api::authentication::v1::{TokenReview as K8sReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::reflector::{self, ObjectRef, Store as Reader};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use mesh_controller_core::store::{BoxFuture, ReviewError, Store};
use serde_json::Value;
use tokio::sync::{Notify, watch};

use crate::convert::{self, Verdict};

/// How long a burst of changes may last before a snapshot is published.
const SETTLE: Duration = Duration::from_millis(50);
/// How long the first snapshot waits for the initial lists.
const FIRST_LIST: Duration = Duration::from_secs(20);

/// One mesh kind's reflector.
#[derive(Clone)]
struct MeshKind {
    kind: &'static str,
    ar: ApiResource,
    reader: Reader<DynamicObject>,
}

/// The readers behind the snapshots.
#[derive(Clone)]
pub struct Readers {
    pods: Reader<Pod>,
    services: Reader<Service>,
    /// Namespaces, for the leader's per-namespace writes.
    pub namespaces: Reader<Namespace>,
    /// The trust anchors' ConfigMaps (by name, in every namespace), which
    /// the leader keeps current; not part of the snapshots.
    pub anchors: Reader<ConfigMap>,
    mesh: Vec<MeshKind>,
}

/// Cluster state read from an API server.
pub struct KubeStore {
    client: Client,
    audience: String,
    rx: watch::Receiver<Arc<Snapshot>>,
    verdicts: watch::Receiver<Arc<Vec<Verdict>>>,
    readers: Readers,
}

impl KubeStore {
    /// Starts the reflectors; snapshots follow once the first lists are in.
    /// `audience` is the one proxies' tokens must be minted for.
    pub fn start(client: Client, audience: &str) -> Self {
        let changed = Arc::new(Notify::new());
        let mesh = api::crd::served()
            .into_iter()
            .map(|s| {
                let ar = ApiResource {
                    group: s.group.into(),
                    version: s.version.into(),
                    api_version: format!("{}/{}", s.group, s.version),
                    kind: s.kind.into(),
                    plural: s.plural.into(),
                };
                let writer = reflector::store::Writer::new(ar.clone());
                let reader = writer.as_reader();
                let api = Api::<DynamicObject>::all_with(client.clone(), &ar);
                spawn_reflector(
                    s.kind,
                    writer,
                    api,
                    watcher::Config::default(),
                    Some(changed.clone()),
                );
                MeshKind {
                    kind: s.kind,
                    ar,
                    reader,
                }
            })
            .collect();
        let readers = Readers {
            pods: reflect(&client, watcher::Config::default(), Some(&changed)),
            services: reflect(&client, watcher::Config::default(), Some(&changed)),
            namespaces: reflect(&client, watcher::Config::default(), Some(&changed)),
            anchors: reflect(
                &client,
                watcher::Config::default().fields(&format!(
                    "metadata.name={}",
                    api::inject::ANCHORS_CONFIG_MAP
                )),
                None,
            ),
            mesh,
        };
        let (tx, rx) = watch::channel(Arc::new(Snapshot::default()));
        let (vtx, verdicts) = watch::channel(Arc::new(Vec::new()));
        tokio::spawn(publish(readers.clone(), changed, tx, vtx));
        Self {
            client,
            audience: audience.to_string(),
            rx,
            verdicts,
            readers,
        }
    }

    /// The verdict on every mesh object, current with the snapshots.
    pub fn verdicts(&self) -> watch::Receiver<Arc<Vec<Verdict>>> {
        self.verdicts.clone()
    }

    /// The reflectors' readers.
    pub fn readers(&self) -> &Readers {
        &self.readers
    }
}

/// A reflector of `K` in every namespace; its changes wake the snapshot
/// builder when `changed` is given.
fn reflect<K>(client: &Client, config: watcher::Config, changed: Option<&Arc<Notify>>) -> Reader<K>
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
    spawn_reflector(
        <K as k8s_openapi::Resource>::KIND,
        writer,
        Api::<K>::all(client.clone()),
        config,
        changed.cloned(),
    );
    reader
}

fn spawn_reflector<K>(
    kind: &'static str,
    writer: reflector::store::Writer<K>,
    api: Api<K>,
    config: watcher::Config,
    changed: Option<Arc<Notify>>,
) where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static,
    K::DynamicType: Clone + Eq + std::hash::Hash + Send + Sync,
{
    tokio::spawn(async move {
        let stream = watcher(api, config).default_backoff().reflect(writer);
        let mut stream = std::pin::pin!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => {
                    if let Some(c) = &changed {
                        c.notify_one();
                    }
                }
                Err(e) => tracing::warn!(kind, error = %e, "watch failed; retrying"),
            }
        }
    });
}

/// Publishes a snapshot after each burst of changes (and only when the
/// content changed: a status write by the leader is not a change).
async fn publish(
    r: Readers,
    changed: Arc<Notify>,
    tx: watch::Sender<Arc<Snapshot>>,
    verdicts: watch::Sender<Arc<Vec<Verdict>>>,
) {
    let first = async {
        let _ = r.pods.wait_until_ready().await;
        let _ = r.services.wait_until_ready().await;
        for m in &r.mesh {
            let _ = m.reader.wait_until_ready().await;
        }
    };
    if tokio::time::timeout(FIRST_LIST, first).await.is_err() {
        tracing::warn!("not every list arrived in time; serving what is known");
    }
    let mut version = 0u64;
    loop {
        let (mut snap, vs) = build(&r);
        let current = tx.borrow().clone();
        if version == 0 || !same_content(&snap, &current) {
            version += 1;
            snap.version = version;
            tracing::debug!(version, pods = snap.pods.len(), "snapshot");
            tx.send_replace(Arc::new(snap));
        }
        verdicts.send_if_modified(|old| {
            let changed = **old != vs;
            if changed {
                *old = Arc::new(vs);
            }
            changed
        });
        changed.notified().await;
        tokio::time::sleep(SETTLE).await;
    }
}

fn same_content(a: &Snapshot, b: &Snapshot) -> bool {
    a.pods == b.pods && a.services == b.services && a.config == b.config
}

fn build(r: &Readers) -> (Snapshot, Vec<Verdict>) {
    let mut pods: Vec<_> = r
        .pods
        .state()
        .iter()
        .filter_map(|p| convert::pod(p))
        .collect();
    pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut services: Vec<_> = r
        .services
        .state()
        .iter()
        .filter_map(|s| convert::service(s))
        .collect();
    services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    let mut objects = Vec::new();
    let mut verdicts = Vec::new();
    for m in &r.mesh {
        for o in m.reader.state() {
            let (object, verdict) = convert::mesh_object(&o, m.kind);
            objects.extend(object);
            verdicts.push(verdict);
        }
    }
    verdicts
        .sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
    objects.sort_by_key(api::manifest::describe);
    let snap = Snapshot {
        version: 0,
        pods,
        services,
        config: MeshConfig::from_objects(&objects),
    };
    (snap, verdicts)
}

impl Store for KubeStore {
    fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>> {
        self.rx.clone()
    }

    fn review_token<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<TokenReview, ReviewError>> {
        Box::pin(review(self.client.clone(), token, &self.audience))
    }
}

/// Asks the API server who holds `token`, for our audience only.
async fn review(client: Client, token: &str, audience: &str) -> Result<TokenReview, ReviewError> {
    let request = K8sReview {
        spec: TokenReviewSpec {
            token: Some(token.to_string()),
            audiences: Some(vec![audience.to_string()]),
        },
        ..Default::default()
    };
    let answer = Api::<K8sReview>::all(client)
        .create(&PostParams::default(), &request)
        .await
        .map_err(|e| ReviewError::Unavailable(format!("TokenReview: {e}")))?;
    let status = answer.status.unwrap_or_default();
    if status.authenticated != Some(true) {
        tracing::info!(error = ?status.error, "token not authenticated");
        return Err(ReviewError::Rejected);
    }
    // An API server that ignored the audience would list others.
    if let Some(auds) = &status.audiences
        && !auds.iter().any(|a| a == audience)
    {
        return Err(ReviewError::Rejected);
    }
    let user = status.user.unwrap_or_default();
    let username = user.username.unwrap_or_default();
    let Some((namespace, service_account)) = username
        .strip_prefix("system:serviceaccount:")
        .and_then(|r| r.split_once(':'))
    else {
        tracing::info!(%username, "token is not a ServiceAccount's");
        return Err(ReviewError::Rejected);
    };
    let pod = user
        .extra
        .as_ref()
        .and_then(|e| e.get("authentication.kubernetes.io/pod-name"))
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_default();
    Ok(TokenReview {
        pod,
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
    })
}

/// Whether the `status` a verdict asks for differs from what `o` carries
/// (transition times aside: they are the writer's to keep).
pub fn status_differs(o: &DynamicObject, v: &Verdict) -> bool {
    let strip = |s: &Value| {
        let mut s = s.clone();
        for c in s
            .get_mut("conditions")
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastTransitionTime");
            }
        }
        s
    };
    o.data.get("status").map(strip) != Some(strip(&v.status()))
}

impl Readers {
    /// The mesh object a verdict is about, as last seen.
    pub fn mesh_object(&self, v: &Verdict) -> Option<(ApiResource, Arc<DynamicObject>)> {
        let m = self.mesh.iter().find(|m| m.kind == v.kind)?;
        let key = ObjectRef::new_with(&v.name, m.ar.clone()).within(&v.namespace);
        Some((m.ar.clone(), m.reader.get(&key)?))
    }
}
