//! Kubernetes objects into the store-neutral view the core reads, and the
//! verdict on every mesh object (accepted, or invalid with field paths),
//! which the leader writes into its status.

use std::net::IpAddr;

use api::cluster;
use api::manifest::Object;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::DynamicObject;

/// The mesh's view of a pod, once it is named and scheduled.
pub fn pod(p: &Pod) -> Option<cluster::Pod> {
    let meta = &p.metadata;
    let spec = p.spec.as_ref()?;
    let status = p.status.as_ref();
    let ready = status.is_some_and(|s| {
        s.phase.as_deref() == Some("Running")
            && s.conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    });
    let has_proxy = |cs: &[k8s_openapi::api::core::v1::Container]| {
        cs.iter().any(|c| c.name == api::inject::PROXY)
    };
    Some(cluster::Pod {
        name: meta.name.clone()?,
        namespace: meta.namespace.clone()?,
        labels: meta.labels.clone().unwrap_or_default(),
        service_account: spec
            .service_account_name
            .clone()
            .unwrap_or_else(|| "default".into()),
        ip: status
            .and_then(|s| s.pod_ip.as_deref())
            .and_then(|ip| ip.parse().ok()),
        meshed: has_proxy(&spec.containers)
            || spec.init_containers.as_deref().is_some_and(has_proxy),
        ready,
        named_ports: cluster::named_ports(spec),
        owner: api::inject::workload_of(meta),
        app_exited: app_exited(spec, status),
    })
}

/// Whether every app container has exited and none will restart: with
/// `restartPolicy: Never`, once each has terminated; with `OnFailure`,
/// once each has terminated with 0. (A Deployment's pods always restart.)
fn app_exited(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    status: Option<&k8s_openapi::api::core::v1::PodStatus>,
) -> bool {
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    if policy == "Always" {
        return false;
    }
    let statuses = status
        .and_then(|s| s.container_statuses.as_deref())
        .unwrap_or_default();
    let apps: Vec<_> = statuses
        .iter()
        .filter(|c| c.name != api::inject::PROXY)
        .collect();
    !apps.is_empty()
        && apps.len()
            == spec
                .containers
                .iter()
                .filter(|c| c.name != api::inject::PROXY)
                .count()
        && apps.iter().all(|c| {
            c.state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .is_some_and(|t| policy == "Never" || t.exit_code == 0)
        })
}

/// The mesh's view of a Service with a cluster IP (headless Services and
/// ExternalName have none and are left out).
pub fn service(s: &Service) -> Option<cluster::Service> {
    let ip: IpAddr = s.spec.as_ref()?.cluster_ip.as_deref()?.parse().ok()?;
    Some(cluster::Service::from_k8s(s, ip))
}

/// What the controller made of one mesh object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// `Kind`.
    pub kind: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.generation` judged.
    pub generation: Option<i64>,
    /// Empty when accepted; else (field path, message) pairs.
    pub problems: Vec<(String, String)>,
    /// Fields that are stored but not acted on, as `apply` warns them:
    /// (field path, note).
    pub not_enforced: Vec<(String, String)>,
    /// What it names and the cluster lacks (field path, message); it
    /// stays accepted.
    pub warnings: Vec<(String, String)>,
}

impl Verdict {
    /// The status this verdict asks for: Istio's `Reconciled`-style
    /// condition, named `Accepted` as Gateway API does, plus
    /// `validationMessages` as Istio's analyzers write them.
    pub fn status(&self) -> serde_json::Value {
        let accepted = self.problems.is_empty();
        let message = if accepted {
            "accepted".to_string()
        } else {
            self.problems
                .iter()
                .map(|(f, m)| {
                    if f.is_empty() {
                        m.clone()
                    } else {
                        format!("{f}: {m}")
                    }
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let messages: Vec<serde_json::Value> =
            self.problems
                .iter()
                .map(|(f, m)| serde_json::json!({"level": "ERROR", "field": f, "message": m}))
                .chain(self.not_enforced.iter().chain(&self.warnings).map(
                    |(f, n)| serde_json::json!({"level": "WARNING", "field": f, "message": n}),
                ))
                .collect();
        serde_json::json!({
            "observedGeneration": self.generation,
            "conditions": [{
                "type": "Accepted",
                "status": if accepted { "True" } else { "False" },
                "reason": if accepted { "Valid" } else { "Invalid" },
                "message": message,
                "observedGeneration": self.generation,
            }],
            "validationMessages": messages,
        })
    }
}

/// Reads a mesh object as the API server holds it: the object when valid,
/// and always its verdict.
pub fn mesh_object(o: &DynamicObject, kind: &str) -> (Option<Object>, Verdict) {
    let mut value = serde_json::to_value(o).unwrap_or_default();
    if let Some(m) = value.as_object_mut() {
        // The API server's bookkeeping is not the user's to get wrong.
        m.remove("status");
        if let Some(meta) = m.get_mut("metadata").and_then(|v| v.as_object_mut()) {
            meta.remove("managedFields");
        }
    }
    let mut verdict = Verdict {
        kind: kind.to_string(),
        namespace: o.metadata.namespace.clone().unwrap_or_default(),
        name: o.metadata.name.clone().unwrap_or_default(),
        generation: o.metadata.generation,
        problems: Vec::new(),
        not_enforced: Vec::new(),
        warnings: Vec::new(),
    };
    match api::manifest::read(value) {
        Ok(object) => {
            verdict.not_enforced = api::enforcement::not_enforced(&object);
            (Some(object), verdict)
        }
        Err(problems) => {
            verdict.problems = problems;
            (None, verdict)
        }
    }
}

#[cfg(test)]
mod tests;
