//! Whether a pod gets the sidecar, by Istio's rules: a namespace labelled
//! `istio-injection=disabled` never; a pod saying
//! `sidecar.istio.io/inject: "false"` (label or annotation) never; a pod
//! labelled `"true"` always; otherwise the namespace label `enabled` (or,
//! on the local runtime, the default). Pods on the host's network, the
//! system namespaces and pods already injected are left alone.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{INJECT, NAMESPACE_LABEL, PROXY, STATUS};

/// Namespaces never injected.
const SYSTEM: [&str; 4] = [
    "kube-system",
    "kube-public",
    "kube-node-lease",
    "mesh-system",
];

/// The answer, with the reason when it is no.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Inject.
    Inject,
    /// Leave the pod as it is.
    Skip(String),
}

fn said(m: Option<&BTreeMap<String, String>>) -> Option<bool> {
    match m?.get(INJECT)?.as_str() {
        "true" | "enabled" | "yes" | "y" | "on" => Some(true),
        "false" | "disabled" | "no" | "n" | "off" => Some(false),
        _ => None,
    }
}

/// Decides for the pod `meta`/`spec` in `namespace`.
pub fn decide(
    meta: &ObjectMeta,
    spec: &PodSpec,
    namespace: &str,
    namespace_labels: &BTreeMap<String, String>,
    by_default: bool,
) -> Decision {
    let skip = |why: &str| Decision::Skip(why.to_string());
    if SYSTEM.contains(&namespace) {
        return skip("a system namespace is never injected");
    }
    if meta
        .annotations
        .as_ref()
        .is_some_and(|a| a.contains_key(STATUS))
        || spec.containers.iter().any(|c| c.name == PROXY)
    {
        return skip("already injected");
    }
    if spec.host_network == Some(true) {
        return skip("the pod uses the host's network (hostNetwork: true)");
    }
    let ns = namespace_labels.get(NAMESPACE_LABEL).map(String::as_str);
    if ns == Some("disabled") {
        return skip("the namespace is labelled istio-injection=disabled");
    }
    let label = said(meta.labels.as_ref());
    let annotation = said(meta.annotations.as_ref());
    if label == Some(false) || annotation == Some(false) {
        return skip("the pod says sidecar.istio.io/inject: \"false\"");
    }
    if label == Some(true) || ns == Some("enabled") || by_default {
        return Decision::Inject;
    }
    skip(
        "injection is not enabled: label the namespace istio-injection=enabled or the pod sidecar.istio.io/inject=true",
    )
}
