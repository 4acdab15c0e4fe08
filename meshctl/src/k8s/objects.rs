//! A cluster's objects as the analyzer reads them: the Kubernetes kinds it
//! knows and every mesh kind, each read and checked like a manifest.

use api::manifest::Object;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DynamicObject, ListParams};

/// What was read: the objects, the ones refused (as `Kind ns/name`, field
/// path, message), and every pod's labels.
#[derive(Default)]
pub struct Read {
    /// Valid objects.
    pub objects: Vec<Object>,
    /// Objects that do not read as their kind's schema says.
    pub refused: Vec<(String, String, String)>,
    /// (namespace, labels) of every pod.
    pub pods: Vec<(String, std::collections::BTreeMap<String, String>)>,
}

/// Lists the kinds the analyzer reads; a mesh kind whose CRD is not
/// installed is skipped.
pub async fn read(client: &kube::Client) -> anyhow::Result<Read> {
    let mut kinds: Vec<(String, String)> = vec![
        ("v1".into(), "Namespace".into()),
        ("v1".into(), "ServiceAccount".into()),
        ("v1".into(), "Service".into()),
        ("apps/v1".into(), "Deployment".into()),
    ];
    kinds.extend(
        api::crd::served()
            .into_iter()
            .map(|s| (format!("{}/{}", s.group, s.version), s.kind.to_string())),
    );
    let mut out = Read::default();
    for (api_version, kind) in kinds {
        let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind);
        let Ok((ar, _)) = kube::discovery::pinned_kind(client, &gvk).await else {
            continue;
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
        for o in api.list(&ListParams::default()).await? {
            let mut value = serde_json::to_value(&o)?;
            value["apiVersion"] = api_version.clone().into();
            value["kind"] = kind.clone().into();
            if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
                meta.remove("managedFields");
            }
            let at = format!(
                "{kind} {}/{}",
                o.metadata.namespace.as_deref().unwrap_or_default(),
                o.metadata.name.as_deref().unwrap_or_default()
            );
            match api::manifest::read(value) {
                Ok(object) => out.objects.push(object),
                Err(problems) => out
                    .refused
                    .extend(problems.into_iter().map(|(f, m)| (at.clone(), f, m))),
            }
        }
    }
    let pods: Api<Pod> = Api::all(client.clone());
    out.pods = pods
        .list(&ListParams::default())
        .await?
        .into_iter()
        .map(|p| {
            (
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.labels.unwrap_or_default(),
            )
        })
        .collect();
    Ok(out)
}
