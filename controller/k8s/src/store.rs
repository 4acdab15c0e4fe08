//! The Kubernetes store: reflectors for Pods, Services, EndpointSlices,
//! Namespaces, ServiceAccounts and every mesh kind. Each Pod, Service and
//! EndpointSlice event goes to the index as that object's change; a burst
//! of mesh-object changes rebuilds the mesh config (it is small, and any
//! object in it can change any Service's routing) and the verdicts that
//! the leader writes as status. Token reviews go to the API server.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use api::cluster::{EndpointSlice, MeshConfig, TokenReview};
use k8s_openapi::api::authentication::v1::{TokenReview as K8sReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service, ServiceAccount};
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::reflector::{ObjectRef, Store as Reader};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use mesh_controller_core::index::{Change, Feed, Kind};
use mesh_controller_core::store::{BoxFuture, ReviewError, Store};
use serde_json::Value;
use tokio::sync::{Notify, mpsc, watch};

use crate::convert::{self, Verdict};
use crate::reflect::{Sink, Translate, reflect, reflect_dynamic, slice_api};

/// How long a burst of mesh-object changes may last before the config is
/// rebuilt.
const SETTLE: Duration = Duration::from_millis(50);
/// How long the first batch waits for the initial lists.
const FIRST_LIST: Duration = Duration::from_secs(20);

/// One mesh kind's reflector.
#[derive(Clone)]
struct MeshKind {
    kind: &'static str,
    ar: ApiResource,
    reader: Reader<DynamicObject>,
}

/// The reflectors' readers.
#[derive(Clone)]
pub struct Readers {
    pods: Reader<Pod>,
    services: Reader<Service>,
    /// Namespaces, for the leader's per-namespace writes and the
    /// verdicts' references.
    pub namespaces: Reader<Namespace>,
    /// ServiceAccounts, for the verdicts' references.
    accounts: Reader<ServiceAccount>,
    /// The trust anchors' ConfigMaps (by name, in every namespace), which
    /// the leader keeps current.
    pub anchors: Reader<ConfigMap>,
    /// The mesh configuration's ConfigMaps (`istio`, read in a root
    /// namespace).
    mesh_config: Reader<ConfigMap>,
    mesh: Vec<MeshKind>,
}

/// Cluster state read from an API server.
pub struct KubeStore {
    client: Client,
    audience: String,
    verdicts: watch::Receiver<Arc<Vec<Verdict>>>,
    readers: Readers,
}

impl KubeStore {
    /// Starts the reflectors; their changes go to `feed`, the first batch
    /// once the first lists are in. `audience` is the one proxies' tokens
    /// must be minted for.
    pub fn start(client: Client, audience: &str, feed: Feed) -> Self {
        let mesh_changed = Arc::new(Notify::new());
        let (tx, rx) = mpsc::unbounded_channel();
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
                let reader =
                    reflect_dynamic(&client, s.kind, &ar, Sink::Wake(mesh_changed.clone()));
                MeshKind {
                    kind: s.kind,
                    ar,
                    reader,
                }
            })
            .collect();
        let all = watcher::Config::default;
        let readers = Readers {
            pods: reflect(
                &client,
                all(),
                Sink::Changes(Translate::new(Kind::Pods, tx.clone(), |k, p| {
                    Change::Pod(k, p.and_then(convert::pod))
                })),
            ),
            services: reflect(
                &client,
                all(),
                Sink::Changes(Translate::new(Kind::Services, tx.clone(), |k, s| {
                    Change::Service(k, s.and_then(convert::service))
                })),
            ),
            namespaces: reflect(&client, all(), Sink::Wake(mesh_changed.clone())),
            accounts: reflect(&client, all(), Sink::Wake(mesh_changed.clone())),
            anchors: reflect(
                &client,
                all().fields(&format!(
                    "metadata.name={}",
                    api::inject::ANCHORS_CONFIG_MAP
                )),
                Sink::None,
            ),
            mesh_config: reflect(
                &client,
                all().fields(&format!(
                    "metadata.name={}",
                    api::istio::mesh_config::CONFIG_MAP
                )),
                Sink::Wake(mesh_changed.clone()),
            ),
            mesh,
        };
        let (vtx, verdicts) = watch::channel(Arc::new(Vec::new()));
        tokio::spawn(
            Publisher {
                readers: readers.clone(),
                client: client.clone(),
                tx,
                rx,
                mesh_changed,
                feed,
                verdicts: vtx,
            }
            .run(),
        );
        Self {
            client,
            audience: audience.to_string(),
            verdicts,
            readers,
        }
    }

    /// The verdict on every mesh object, current with the config.
    pub fn verdicts(&self) -> watch::Receiver<Arc<Vec<Verdict>>> {
        self.verdicts.clone()
    }

    /// The reflectors' readers.
    pub fn readers(&self) -> &Readers {
        &self.readers
    }
}

/// Forwards the reflectors' changes to the index.
struct Publisher {
    readers: Readers,
    client: Client,
    tx: mpsc::UnboundedSender<Vec<Change>>,
    rx: mpsc::UnboundedReceiver<Vec<Change>>,
    mesh_changed: Arc<Notify>,
    feed: Feed,
    verdicts: watch::Sender<Arc<Vec<Verdict>>>,
}

impl Publisher {
    async fn run(mut self) {
        let slices = self.slices().await;
        let r = &self.readers;
        let first = async {
            let _ = r.pods.wait_until_ready().await;
            let _ = r.services.wait_until_ready().await;
            let _ = r.namespaces.wait_until_ready().await;
            let _ = r.accounts.wait_until_ready().await;
            for m in &r.mesh {
                let _ = m.reader.wait_until_ready().await;
            }
            if let Some(s) = &slices {
                let _ = s.wait_until_ready().await;
            }
        };
        if tokio::time::timeout(FIRST_LIST, first).await.is_err() {
            tracing::warn!("not every list arrived in time; serving what is known");
        }
        let mut batch = self.drain(Vec::new());
        let mut mesh_dirty = true;
        loop {
            if std::mem::take(&mut mesh_dirty) {
                let (config, verdicts) = mesh(&self.readers);
                batch.push(Change::Config(Box::new(config)));
                self.verdicts.send_if_modified(|old| {
                    let changed = **old != verdicts;
                    if changed {
                        *old = Arc::new(verdicts);
                    }
                    changed
                });
            }
            if !self.feed.send(std::mem::take(&mut batch)) {
                return;
            }
            tokio::select! {
                Some(b) = self.rx.recv() => batch = self.drain(b),
                () = self.mesh_changed.notified() => {
                    tokio::time::sleep(SETTLE).await;
                    mesh_dirty = true;
                    batch = self.drain(Vec::new());
                }
            }
        }
    }

    /// `batch` and every change already waiting.
    fn drain(&mut self, mut batch: Vec<Change>) -> Vec<Change> {
        while let Ok(more) = self.rx.try_recv() {
            batch.extend(more);
        }
        batch
    }

    /// Starts the EndpointSlice reflector, on the API version served.
    async fn slices(&self) -> Option<Reader<DynamicObject>> {
        let Some(ar) = slice_api(&self.client).await else {
            tracing::warn!(
                "EndpointSlices are not served: selector-less Services have no endpoints"
            );
            return None;
        };
        tracing::info!(api = %ar.api_version, "watching EndpointSlices");
        let to = |k, o: Option<&DynamicObject>| {
            let slice = o
                .and_then(|o| serde_json::to_value(o).ok())
                .and_then(|v| EndpointSlice::from_json(&v));
            Change::Slice(k, slice)
        };
        Some(reflect_dynamic(
            &self.client,
            "EndpointSlice",
            &ar,
            Sink::Changes(Translate::new(Kind::Slices, self.tx.clone(), to)),
        ))
    }
}

/// The mesh config of every valid mesh object, and the verdict on each.
fn mesh(r: &Readers) -> (MeshConfig, Vec<Verdict>) {
    let known = crate::references::Known {
        namespaces: r.namespaces.state().iter().map(|n| n.name_any()).collect(),
        accounts: r
            .accounts
            .state()
            .iter()
            .map(|a| (a.namespace().unwrap_or_default(), a.name_any()))
            .collect::<BTreeSet<_>>(),
    };
    let mut objects = Vec::new();
    let mut verdicts = Vec::new();
    for m in &r.mesh {
        for o in m.reader.state() {
            let (object, mut verdict) = convert::mesh_object(&o, m.kind);
            verdict.warnings = crate::references::check(&o, m.kind, &known);
            objects.extend(object);
            verdicts.push(verdict);
        }
    }
    verdicts
        .sort_by(|a, b| (&a.kind, &a.namespace, &a.name).cmp(&(&b.kind, &b.namespace, &b.name)));
    objects.sort_by_key(api::manifest::describe);
    for cm in r.mesh_config.state() {
        let ns = cm.namespace().unwrap_or_default();
        if !api::istio::mesh_config::is_mesh_config(&ns, &cm.name_any()) {
            continue;
        }
        let yaml = cm
            .data
            .as_ref()
            .and_then(|d| d.get(api::istio::mesh_config::KEY));
        if let Some(Err(problems)) = yaml.map(|y| api::istio::mesh_config::parse(y)) {
            for p in problems {
                tracing::warn!(namespace = %ns, field = %p.field, problem = %p.message, "mesh configuration not read");
            }
        }
        objects.push(api::manifest::Object::ConfigMap(Box::new((*cm).clone())));
    }
    (MeshConfig::from_objects(&objects), verdicts)
}

impl Store for KubeStore {
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
