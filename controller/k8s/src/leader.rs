//! What only the leader writes: status conditions on mesh objects, the
//! trust anchors' ConfigMap in every namespace (injected proxies mount
//! it), and the webhooks' caBundle.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use api::inject::PART_OF;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::reflector::ObjectRef;
use tokio::sync::watch;

use crate::convert::Verdict;
use crate::store::{Readers, status_differs};

/// How often the leader checks what others may have changed.
const RECONCILE: Duration = Duration::from_secs(10);

/// The leader's inputs.
pub struct Leader {
    /// The API.
    pub client: Client,
    /// The readers.
    pub readers: Readers,
    /// The verdicts to write as status.
    pub verdicts: watch::Receiver<Arc<Vec<Verdict>>>,
    /// The trust anchors, PEM.
    pub anchors_pem: String,
    /// Whether this replica leads.
    pub leads: watch::Receiver<bool>,
}

impl Leader {
    /// Writes while leading, forever.
    pub async fn run(mut self) {
        loop {
            if !*self.leads.borrow_and_update() {
                if self.leads.changed().await.is_err() {
                    return;
                }
                continue;
            }
            self.round().await;
            tokio::select! {
                _ = self.verdicts.changed() => {}
                _ = self.leads.changed() => {}
                () = tokio::time::sleep(RECONCILE) => {}
            }
        }
    }

    async fn round(&mut self) {
        let verdicts = self.verdicts.borrow_and_update().clone();
        for v in verdicts.iter() {
            if let Err(e) = self.write_status(v).await {
                tracing::warn!(kind = %v.kind, ns = %v.namespace, name = %v.name, error = %e, "status");
            }
        }
        if let Err(e) = self.anchors().await {
            tracing::warn!(error = %e, "trust anchors ConfigMaps");
        }
        if let Err(e) = self.ca_bundles().await {
            tracing::warn!(error = %e, "webhook caBundles");
        }
    }

    async fn write_status(&self, v: &Verdict) -> kube::Result<()> {
        let Some((ar, o)) = self.readers.mesh_object(v) else {
            return Ok(());
        };
        if !status_differs(&o, v) {
            return Ok(());
        }
        let mut status = v.status();
        let now = k8s_openapi::jiff::Timestamp::now().to_string();
        for c in status["conditions"].as_array_mut().into_iter().flatten() {
            c["lastTransitionTime"] = now.clone().into();
        }
        let api: Api<kube::api::DynamicObject> =
            Api::namespaced_with(self.client.clone(), &v.namespace, &ar);
        api.patch_status(
            &v.name,
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({ "status": status })),
        )
        .await?;
        tracing::info!(kind = %v.kind, ns = %v.namespace, name = %v.name, accepted = v.problems.is_empty(), "status written");
        Ok(())
    }

    /// Writes the anchors' ConfigMap in every active namespace where the
    /// reflector shows it missing or stale.
    async fn anchors(&self) -> kube::Result<()> {
        for ns in self.readers.namespaces.state() {
            let Some(name) = ns.metadata.name.as_deref() else {
                continue;
            };
            if ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating") {
                continue;
            }
            let key = ObjectRef::new(api::inject::ANCHORS_CONFIG_MAP).within(name);
            let current = self.readers.anchors.get(&key);
            let data = current.as_ref().and_then(|c| c.data.as_ref());
            if data.and_then(|d| d.get("ca.crt")) == Some(&self.anchors_pem) {
                continue;
            }
            let cm = ConfigMap {
                metadata: ObjectMeta {
                    name: Some(api::inject::ANCHORS_CONFIG_MAP.into()),
                    namespace: Some(name.into()),
                    labels: Some(BTreeMap::from([(PART_OF.0.into(), PART_OF.1.into())])),
                    ..Default::default()
                },
                data: Some(BTreeMap::from([(
                    "ca.crt".into(),
                    self.anchors_pem.clone(),
                )])),
                ..Default::default()
            };
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), name);
            if current.is_some() {
                api.replace(api::inject::ANCHORS_CONFIG_MAP, &PostParams::default(), &cm)
                    .await?;
            } else {
                match api.create(&PostParams::default(), &cm).await {
                    // Made since the reflector last looked: current next round.
                    Err(kube::Error::Api(e)) if e.code == 409 => continue,
                    r => r?,
                };
            }
            tracing::info!(namespace = name, "trust anchors ConfigMap written");
        }
        Ok(())
    }

    /// Keeps every mesh webhook's caBundle on the trust anchors.
    async fn ca_bundles(&self) -> kube::Result<()> {
        let bundle = ByteString(self.anchors_pem.clone().into_bytes());
        rebundle::<MutatingWebhookConfiguration>(&self.client, &bundle, |c| {
            c.webhooks
                .iter_mut()
                .flatten()
                .map(|w| &mut w.client_config)
                .collect()
        })
        .await?;
        rebundle::<ValidatingWebhookConfiguration>(&self.client, &bundle, |c| {
            c.webhooks
                .iter_mut()
                .flatten()
                .map(|w| &mut w.client_config)
                .collect()
        })
        .await
    }
}

/// Replaces each of the mesh's webhook configurations of kind `K` whose
/// client configs (`hooks`) do not all carry `bundle`.
async fn rebundle<K>(
    client: &Client,
    bundle: &ByteString,
    hooks: for<'a> fn(&'a mut K) -> Vec<&'a mut WebhookClientConfig>,
) -> kube::Result<()>
where
    K: kube::Resource<DynamicType = (), Scope = k8s_openapi::ClusterResourceScope>
        + Clone
        + std::fmt::Debug
        + serde::Serialize
        + serde::de::DeserializeOwned,
{
    let api: Api<K> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("{}={}", PART_OF.0, PART_OF.1));
    for mut c in api.list(&lp).await? {
        if set_bundles(hooks(&mut c).into_iter(), bundle) {
            let name = c.meta().name.clone().unwrap_or_default();
            api.replace(&name, &PostParams::default(), &c).await?;
            tracing::info!(%name, "caBundle written");
        }
    }
    Ok(())
}

/// Sets every client config's caBundle; whether any changed.
fn set_bundles<'a>(
    configs: impl Iterator<Item = &'a mut WebhookClientConfig>,
    bundle: &ByteString,
) -> bool {
    let mut changed = false;
    for c in configs {
        if c.ca_bundle.as_ref() != Some(bundle) {
            c.ca_bundle = Some(bundle.clone());
            changed = true;
        }
    }
    changed
}
