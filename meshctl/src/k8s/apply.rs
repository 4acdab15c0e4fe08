//! Server-side apply and deletion of arbitrary objects, found by their
//! `apiVersion` and `kind` through discovery.

use anyhow::Context;
use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{ApiCapabilities, ApiResource, Scope};
use serde_json::Value;

/// The field manager of meshctl's writes.
pub const MANAGER: &str = "meshctl";

/// `Kind ns/name` (or `Kind name`).
pub fn describe(o: &Value) -> String {
    let kind = o["kind"].as_str().unwrap_or("?");
    let name = o["metadata"]["name"].as_str().unwrap_or("?");
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!("{kind} {ns}/{name}"),
        None => format!("{kind} {name}"),
    }
}

/// The API of `o`'s kind, in its namespace when it has one.
pub async fn api_for(
    client: &kube::Client,
    o: &Value,
) -> anyhow::Result<(Api<DynamicObject>, String)> {
    let api_version = o["apiVersion"].as_str().context("apiVersion missing")?;
    let kind = o["kind"].as_str().context("kind missing")?;
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (ar, caps): (ApiResource, ApiCapabilities) = kube::discovery::pinned_kind(client, &gvk)
        .await
        .with_context(|| format!("the cluster does not serve {api_version} {kind}"))?;
    let name = o["metadata"]["name"]
        .as_str()
        .context("metadata.name missing")?
        .to_string();
    let api = match (caps.scope, o["metadata"]["namespace"].as_str()) {
        (Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &ar),
        _ => Api::all_with(client.clone(), &ar),
    };
    Ok((api, name))
}

/// Applies `o` server-side, taking over fields others set (as
/// `kubectl apply --server-side --force-conflicts`).
pub async fn apply(client: &kube::Client, o: &Value) -> anyhow::Result<()> {
    let (api, name) = api_for(client, o).await?;
    api.patch(
        &name,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(o),
    )
    .await
    .with_context(|| format!("applying {}", describe(o)))?;
    Ok(())
}

/// Deletes `o`; `Ok(false)` when it was not there.
pub async fn delete(client: &kube::Client, o: &Value) -> anyhow::Result<bool> {
    let (api, name) = match api_for(client, o).await {
        Ok(a) => a,
        // A kind no longer served (its CRD gone) has no objects left.
        Err(_) => return Ok(false),
    };
    match api.delete(&name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e).with_context(|| format!("deleting {}", describe(o))),
    }
}
