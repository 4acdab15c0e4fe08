//! The installation's values: the chart's `values.yaml` and what
//! `meshctl install` takes with `-f values.yaml` and `--set key=value`.
//! Defaults here and in `charts/mesh/values.yaml` are the same (a test
//! says so).

use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Everything an installation can be told.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Values {
    /// The SPIFFE trust domain.
    pub trust_domain: String,
    /// Lifetime of workload certificates.
    pub cert_lifetime: String,
    /// Inject the proxy as a native sidecar (Kubernetes 1.29 and later;
    /// `install` detects it when not set).
    pub native_sidecars: Option<bool>,
    /// The controller.
    pub controller: Controller,
    /// The proxy.
    pub proxy: Image,
    /// The admission webhooks.
    pub webhook: Webhook,
    /// The trust anchors and the issuer.
    pub identity: Identity,
    /// Istio's mesh configuration, rendered into the ConfigMap `istio`
    /// (empty: none).
    pub mesh_config: serde_json::Map<String, Value>,
    /// What Prometheus is given to find the proxies.
    pub prometheus: Prometheus,
}

/// Prometheus' ways to the proxies' metrics.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Prometheus {
    /// The ConfigMap `mesh-prometheus` with Istio's `kubernetes-pods`
    /// scrape job (key `scrape-configs.yaml`).
    pub scrape_config: bool,
    /// A PodMonitor for the Prometheus Operator (its CRDs must exist).
    pub pod_monitor: bool,
}

impl Default for Prometheus {
    fn default() -> Self {
        Self {
            scrape_config: true,
            pod_monitor: false,
        }
    }
}

/// The controller's Deployment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Controller {
    /// Image reference.
    pub image: String,
    /// Pull policy.
    pub image_pull_policy: String,
    /// Replicas (one leads; all serve proxies).
    pub replicas: u32,
    /// Log filter (`RUST_LOG` syntax).
    pub log_level: String,
}

/// An image reference.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Image {
    /// Image reference.
    pub image: String,
    /// Pull policy.
    pub image_pull_policy: String,
}

/// The webhooks.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Webhook {
    /// `Fail` or `Ignore`, for both webhooks.
    pub failure_policy: String,
    /// How long the API server waits.
    pub timeout_seconds: u32,
}

/// Where the CA comes from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Identity {
    /// The trust anchors, PEM (always needed: proxies and webhooks trust
    /// them).
    #[serde(rename = "trustAnchorsPEM")]
    pub trust_anchors_pem: String,
    /// The issuer, unless `externalSecret` names a Secret that holds it.
    pub issuer: Issuer,
    /// A Secret in the mesh's namespace with `tls.crt`, `tls.key` and
    /// `ca.crt` (cert-manager's shape), made and renewed by someone else.
    pub external_secret: String,
}

/// The issuer's certificate and key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default)]
pub struct Issuer {
    /// Certificate, PEM.
    #[serde(rename = "certPEM")]
    pub cert_pem: String,
    /// Key, PEM.
    #[serde(rename = "keyPEM")]
    pub key_pem: String,
}

impl Default for Values {
    fn default() -> Self {
        Self {
            trust_domain: api::spiffe::DEFAULT_TRUST_DOMAIN.into(),
            cert_lifetime: "24h".into(),
            native_sidecars: None,
            controller: Controller::default(),
            proxy: Image {
                image: api::inject::DEFAULT_IMAGE.into(),
                image_pull_policy: "IfNotPresent".into(),
            },
            webhook: Webhook::default(),
            identity: Identity::default(),
            mesh_config: serde_json::Map::new(),
            prometheus: Prometheus::default(),
        }
    }
}

impl Default for Controller {
    fn default() -> Self {
        Self {
            image: CONTROLLER_IMAGE.into(),
            image_pull_policy: "IfNotPresent".into(),
            replicas: 1,
            log_level: "info".into(),
        }
    }
}

impl Default for Image {
    fn default() -> Self {
        Self {
            image: String::new(),
            image_pull_policy: "IfNotPresent".into(),
        }
    }
}

impl Default for Webhook {
    fn default() -> Self {
        Self {
            failure_policy: "Fail".into(),
            timeout_seconds: 10,
        }
    }
}

/// The controller image, unless told otherwise.
pub const CONTROLLER_IMAGE: &str = "local/mesh-controller:0.1.0";

impl Values {
    /// The defaults, then each `-f` file, then each `--set`, as Helm
    /// layers them. Errors name the file or the key.
    pub fn layered(files: &[impl AsRef<Path>], sets: &[String]) -> anyhow::Result<Self> {
        let mut tree = serde_json::to_value(Self::default())?;
        for f in files {
            let f = f.as_ref();
            let text = std::fs::read_to_string(f)
                .with_context(|| format!("reading values file {}", f.display()))?;
            let v: Value = serde_yaml_ng::from_str(&text)
                .with_context(|| format!("{}: not a YAML mapping", f.display()))?;
            merge(&mut tree, v);
        }
        for s in sets {
            let (key, value) = s.split_once('=').with_context(|| {
                format!("--set {s:?}: expected key=value, e.g. --set controller.replicas=2")
            })?;
            set(&mut tree, key, parse_scalar(value));
        }
        serde_path_to_error::deserialize(tree).map_err(|e| {
            let path = e.path().to_string();
            anyhow::anyhow!(
                "values: {path}: {}; see charts/mesh/values.yaml for the keys and their types",
                e.into_inner()
            )
        })
    }
}

/// Helm's `--set` scalars: booleans, integers, null, else strings.
fn parse_scalar(s: &str) -> Value {
    match s {
        "true" => Value::Bool(true),
        "false" => Value::Bool(false),
        "null" => Value::Null,
        _ => s
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(s.to_string())),
    }
}

fn set(tree: &mut Value, key: &str, value: Value) {
    let mut at = tree;
    for part in key.split('.') {
        if !at.is_object() {
            *at = Value::Object(Default::default());
        }
        at = at
            .as_object_mut()
            .map(|m| m.entry(part.to_string()).or_insert(Value::Null))
            .unwrap_or_else(|| unreachable!("made an object above"));
    }
    *at = value;
}

fn merge(into: &mut Value, from: Value) {
    match (into, from) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_override_files_which_override_defaults() {
        let dir = std::env::temp_dir().join(format!("mesh-values-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("v.yaml");
        std::fs::write(&f, "controller:\n  replicas: 3\n  image: a/b:1\n").unwrap();
        let v = Values::layered(
            &[&f],
            &["controller.replicas=2".into(), "nativeSidecars=true".into()],
        )
        .unwrap();
        assert_eq!(v.controller.replicas, 2);
        assert_eq!(v.controller.image, "a/b:1");
        assert_eq!(v.native_sidecars, Some(true));
        assert_eq!(v.proxy.image, api::inject::DEFAULT_IMAGE);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_unknown_or_mistyped_key_is_named() {
        let none: [&str; 0] = [];
        let e = Values::layered(&none, &["controller.replica=2".into()]).unwrap_err();
        assert!(e.to_string().contains("controller"), "{e}");
        assert!(e.to_string().contains("replica"), "{e}");
        let e = Values::layered(&none, &["controller.replicas=two".into()]).unwrap_err();
        assert!(e.to_string().contains("controller.replicas"), "{e}");
    }
}
