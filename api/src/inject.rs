//! The sidecar injector, pure: a pod's metadata and spec in, the same
//! with the mesh's redirection init container and proxy out. The
//! Kubernetes mutating webhook, `meshctl inject` and the local runtime
//! all call [`inject`], so that a pod is meshed the same way everywhere.
//!
//! It reads Istio's knobs: the namespace label `istio-injection`, the pod
//! label or annotation `sidecar.istio.io/inject`, the
//! `traffic.sidecar.istio.io/*` exclusions, `proxy.istio.io/config`
//! (`holdApplicationUntilProxyStarts`), the `sidecar.istio.io/proxy*`
//! resource annotations and `sidecar.istio.io/userVolume(Mount)`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

mod policy;
mod probes;
mod sidecar;
#[cfg(test)]
mod tests;
mod user_volumes;

pub use policy::{Decision, decide};
pub use probes::AppProbe;
pub use sidecar::ProxyConfig;
pub use user_volumes::{USER_VOLUME, USER_VOLUME_MOUNT, UserVolumes};

/// `sidecar.istio.io/inject`, on a pod (label or annotation).
pub const INJECT: &str = "sidecar.istio.io/inject";
/// The namespace label that turns injection on or off.
pub const NAMESPACE_LABEL: &str = "istio-injection";
/// What the injector added, as JSON (Istio's `sidecar.istio.io/status`):
/// a pod that carries it is not injected twice.
pub const STATUS: &str = "sidecar.istio.io/status";
/// `proxy.istio.io/config`: the proxy's settings for this pod, as YAML.
pub const PROXY_CONFIG: &str = "proxy.istio.io/config";
/// The proxy container's name.
pub const PROXY: &str = "mesh-proxy";
/// The redirection init container's name.
pub const INIT: &str = "mesh-init";
/// The proxy's health port: readiness, metrics, and the app's probes.
pub const HEALTH_PORT: i32 = 15020;
/// Where the proxy reads its ServiceAccount token.
pub const TOKEN_DIR: &str = "/var/run/secrets/mesh/tokens";
/// Where the proxy reads the trust anchors.
pub const ANCHORS_DIR: &str = "/var/run/mesh/anchors";
/// The proxy image, unless the installation says otherwise.
pub const DEFAULT_IMAGE: &str = "local/mesh-proxy:0.1.0";
/// The controller's Service, as proxies reach it.
pub const DEFAULT_CONTROLLER: &str = "mesh-controller.mesh-system.svc:15012";
/// The audience of the proxies' ServiceAccount tokens.
pub const TOKEN_AUDIENCE: &str = "mesh.io/controller";
/// The label on every object the installation and the controller make
/// (install, uninstall and the leader's writes find them by it).
pub const PART_OF: (&str, &str) = ("app.kubernetes.io/part-of", "mesh");
/// The ConfigMap of the trust anchors, in every injected namespace.
pub const ANCHORS_CONFIG_MAP: &str = "mesh-trust-anchors";

/// What the injector puts in, from the installation.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The proxy image (it also runs `mesh-proxy init`).
    pub image: String,
    /// Its pull policy, when set.
    pub pull_policy: Option<String>,
    /// The controller's address, `host:port`.
    pub controller: String,
    /// The mesh's trust domain.
    pub trust_domain: String,
    /// The proxy's UID (and GID); its own traffic is not redirected.
    pub proxy_uid: i64,
    /// The cluster runs init containers with `restartPolicy: Always`
    /// (Kubernetes 1.29 and later): the proxy is one.
    pub native_sidecars: bool,
    /// Inject where neither the namespace nor the pod says: the local
    /// runtime does; on Kubernetes, as in Istio, the namespace label or
    /// the pod label asks for it.
    pub by_default: bool,
    /// The audience of the projected ServiceAccount token.
    pub token_audience: String,
    /// The ConfigMap holding the trust anchors (`ca.crt`).
    pub anchors_config_map: String,
}

impl Settings {
    /// Kubernetes' defaults for `image`: the controller's Service, the
    /// default trust domain, UID 1337, classic sidecars, injection where
    /// asked for, the mesh's token audience and anchors ConfigMap.
    pub fn for_image(image: &str) -> Self {
        Self {
            image: image.to_string(),
            pull_policy: Some("IfNotPresent".into()),
            controller: DEFAULT_CONTROLLER.into(),
            trust_domain: crate::spiffe::DEFAULT_TRUST_DOMAIN.into(),
            proxy_uid: 1337,
            native_sidecars: false,
            by_default: false,
            token_audience: TOKEN_AUDIENCE.into(),
            anchors_config_map: ANCHORS_CONFIG_MAP.into(),
        }
    }
}

/// Why a pod cannot be injected: a bad annotation, named.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("metadata.annotations[{annotation:?}]: {message}")]
pub struct InjectError {
    /// The annotation.
    pub annotation: String,
    /// What is wrong, and what to write instead.
    pub message: String,
}

/// What [`inject`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The sidecar went in; with notes on what was read but not done.
    Injected {
        /// Settings accepted and not acted on (never silently).
        ignored: Vec<String>,
    },
    /// Left as it was, and why.
    Skipped(String),
}

/// Where the pod runs and what owns it.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    /// Its namespace.
    pub namespace: &'a str,
    /// The namespace's labels.
    pub namespace_labels: &'a BTreeMap<String, String>,
    /// The workload (Deployment, Job...) that owns it, for metrics.
    pub workload: &'a str,
}

/// Injects the pod `meta`/`spec` in place. On an error the pod is left
/// as it was.
pub fn inject(
    meta: &mut ObjectMeta,
    spec: &mut PodSpec,
    target: Target<'_>,
    s: &Settings,
) -> Result<Outcome, InjectError> {
    let decision = decide(
        meta,
        spec,
        target.namespace,
        target.namespace_labels,
        s.by_default,
    );
    if let Decision::Skip(why) = decision {
        return Ok(Outcome::Skipped(why));
    }
    let annotations = meta.annotations.clone().unwrap_or_default();
    let plan = sidecar::Plan::read(&annotations)?;
    let ignored = plan.config.ignored.clone();
    sidecar::add(meta, spec, target.workload, &plan, s);
    Ok(Outcome::Injected { ignored })
}

/// The workload that owns a pod, as Istio names it: a ReplicaSet's
/// Deployment (its name less the `pod-template-hash`), else the owner,
/// else the pod's own name (less a generated suffix).
pub fn workload_of(meta: &ObjectMeta) -> String {
    let hash = meta
        .labels
        .as_ref()
        .and_then(|l| l.get("pod-template-hash"));
    if let Some(owner) = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true))
    {
        if owner.kind == "ReplicaSet"
            && let Some(h) = hash
            && let Some(d) = owner.name.strip_suffix(&format!("-{h}"))
        {
            return d.to_string();
        }
        return owner.name.clone();
    }
    meta.name
        .clone()
        .or_else(|| {
            Some(
                meta.generate_name
                    .as_deref()?
                    .trim_end_matches('-')
                    .to_string(),
            )
        })
        .unwrap_or_default()
}
