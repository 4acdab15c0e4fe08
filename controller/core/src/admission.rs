//! The admission webhooks' decisions, pure: an `AdmissionReview`
//! (`admission.k8s.io/v1`) in, the same with its response out.
//!
//! - Mutating ([`mutate`]): a Pod being created gets the sidecar from
//!   [`api::inject`], the injector `meshctl inject` and the local runtime
//!   use, as a JSON patch. The webhook's selectors already chose the pod
//!   (the namespace label `istio-injection=enabled` or the pod label
//!   `sidecar.istio.io/inject=true`), so the pod's own opt-out is what is
//!   left to honour. A pod whose annotations are wrong is admitted as it
//!   is, with a warning that names the annotation: injection never blocks
//!   a workload.
//! - Validating ([`validate`]): a mesh resource is refused with the
//!   messages `meshctl validate` gives (field path and what to do).

use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::api::core::v1::PodSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// `admission.k8s.io/v1` `AdmissionReview`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionReview {
    /// `admission.k8s.io/v1`.
    #[serde(default)]
    pub api_version: String,
    /// `AdmissionReview`.
    #[serde(default)]
    pub kind: String,
    /// What the API server asks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<AdmissionRequest>,
    /// The answer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response: Option<AdmissionResponse>,
}

/// The object under review, as far as the webhooks read it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionRequest {
    /// Echoed in the response.
    pub uid: String,
    /// The object's kind.
    #[serde(default)]
    pub kind: Kind,
    /// Its namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// `CREATE`, `UPDATE`...
    #[serde(default)]
    pub operation: String,
    /// The object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
}

/// A group, version and kind.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Kind {
    /// Its API group (empty for the core group).
    #[serde(default)]
    pub group: String,
    /// Its version.
    #[serde(default)]
    pub version: String,
    /// Its kind.
    #[serde(default)]
    pub kind: String,
}

/// The webhook's answer.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdmissionResponse {
    /// The request's uid.
    pub uid: String,
    /// Admitted.
    pub allowed: bool,
    /// Why not, when refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Status>,
    /// `JSONPatch`, with a patch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<String>,
    /// The JSON patch, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub patch: Option<String>,
    /// Shown to the client (kubectl prints them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// A refusal's status.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// HTTP-like code.
    pub code: u16,
    /// The message.
    pub message: String,
}

fn answer(review: &AdmissionReview, response: AdmissionResponse) -> AdmissionReview {
    AdmissionReview {
        api_version: if review.api_version.is_empty() {
            "admission.k8s.io/v1".into()
        } else {
            review.api_version.clone()
        },
        kind: "AdmissionReview".into(),
        request: None,
        response: Some(response),
    }
}

fn allowed(uid: &str, warnings: Vec<String>) -> AdmissionResponse {
    AdmissionResponse {
        uid: uid.to_string(),
        allowed: true,
        warnings,
        ..Default::default()
    }
}

/// The mutating webhook's answer for `review`.
pub fn mutate(review: &AdmissionReview, settings: &api::inject::Settings) -> AdmissionReview {
    let Some(req) = &review.request else {
        return answer(review, allowed("", vec!["no request".into()]));
    };
    let object = req.object.clone().unwrap_or(Value::Null);
    if req.kind.kind != "Pod" || req.operation != "CREATE" {
        return answer(review, allowed(&req.uid, vec![]));
    }
    let field = |k: &str| object.get(k).cloned().unwrap_or(Value::Null);
    let parsed: Result<(ObjectMeta, PodSpec), _> = serde_json::from_value(field("metadata"))
        .and_then(|m| Ok((m, serde_json::from_value(field("spec"))?)));
    let Ok((mut meta, mut spec)) = parsed else {
        return answer(
            review,
            allowed(
                &req.uid,
                vec!["mesh: the pod could not be read; not injected".into()],
            ),
        );
    };
    let namespace = req
        .namespace
        .clone()
        .or_else(|| meta.namespace.clone())
        .unwrap_or_else(|| "default".into());
    let workload = api::inject::workload_of(&meta);
    let mut settings = settings.clone();
    settings.by_default = true;
    let target = api::inject::Target {
        namespace: &namespace,
        namespace_labels: &BTreeMap::new(),
        workload: &workload,
    };
    let response = match api::inject::inject(&mut meta, &mut spec, target, &settings) {
        Err(e) => allowed(&req.uid, vec![format!("mesh: not injected: {e}")]),
        Ok(api::inject::Outcome::Skipped(_)) => allowed(&req.uid, vec![]),
        Ok(api::inject::Outcome::Injected { ignored }) => {
            let patch = json!([
                {"op": "replace", "path": "/metadata", "value": meta},
                {"op": "replace", "path": "/spec", "value": spec},
            ]);
            AdmissionResponse {
                patch_type: Some("JSONPatch".into()),
                patch: Some(base64::engine::general_purpose::STANDARD.encode(patch.to_string())),
                ..allowed(
                    &req.uid,
                    ignored.into_iter().map(|i| format!("mesh: {i}")).collect(),
                )
            }
        }
    };
    answer(review, response)
}

/// The validating webhook's answer for `review`.
pub fn validate(review: &AdmissionReview) -> AdmissionReview {
    let Some(req) = &review.request else {
        return answer(review, allowed("", vec!["no request".into()]));
    };
    let Some(object) = &req.object else {
        return answer(review, allowed(&req.uid, vec![]));
    };
    let (_, errors) = api::manifest::parse("admission", &object.to_string());
    if errors.is_empty() {
        return answer(review, allowed(&req.uid, vec![]));
    }
    let message = errors
        .iter()
        .map(|e| {
            let at = e.object.clone().unwrap_or_default();
            if e.field.is_empty() {
                format!("{at}: {}", e.message)
            } else {
                format!("{at}: {}: {}", e.field, e.message)
            }
        })
        .collect::<Vec<_>>()
        .join("; ");
    answer(
        review,
        AdmissionResponse {
            uid: req.uid.clone(),
            allowed: false,
            status: Some(Status { code: 422, message }),
            ..Default::default()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> api::inject::Settings {
        api::inject::Settings::for_image(api::inject::DEFAULT_IMAGE)
    }

    fn review(kind: &str, object: Value) -> AdmissionReview {
        serde_json::from_value(json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u-1",
                "kind": {"group": "", "version": "v1", "kind": kind},
                "namespace": "shop",
                "operation": "CREATE",
                "object": object,
            }
        }))
        .unwrap()
    }

    fn patch(r: &AdmissionReview) -> Value {
        let resp = r.response.as_ref().unwrap();
        assert_eq!(resp.patch_type.as_deref(), Some("JSONPatch"));
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(resp.patch.as_ref().unwrap())
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    const POD: &str = r#"{
        "metadata": {"generateName": "web-7d9f8-", "labels": {"app": "web", "pod-template-hash": "7d9f8"},
                     "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "web-7d9f8", "uid": "r", "controller": true}]},
        "spec": {"containers": [{"name": "main", "image": "web:1"}]}
    }"#;

    #[test]
    fn a_new_pod_gets_the_sidecar_as_a_patch() {
        let r = mutate(
            &review("Pod", serde_json::from_str(POD).unwrap()),
            &settings(),
        );
        assert_eq!(r.kind, "AdmissionReview");
        let resp = r.response.as_ref().unwrap();
        assert_eq!((resp.uid.as_str(), resp.allowed), ("u-1", true));
        let p = patch(&r);
        assert_eq!(p[0]["path"], "/metadata");
        assert_eq!(p[1]["path"], "/spec");
        let containers: Vec<&str> = p[1]["value"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(containers, ["mesh-proxy", "main"]);
        let env = p[1]["value"]["containers"][0]["env"].as_array().unwrap();
        assert!(
            env.contains(&json!({"name": "MESH_WORKLOAD", "value": "web"})),
            "{env:?}"
        );
        // The owner survives the metadata replacement.
        assert_eq!(p[0]["value"]["ownerReferences"][0]["name"], "web-7d9f8");
    }

    #[test]
    fn opt_outs_other_kinds_and_bad_annotations_are_admitted_unchanged() {
        let mut off: Value = serde_json::from_str(POD).unwrap();
        off["metadata"]["annotations"] = json!({"sidecar.istio.io/inject": "false"});
        let mut bad: Value = serde_json::from_str(POD).unwrap();
        bad["metadata"]["annotations"] = json!({"sidecar.istio.io/proxyCPU": "fast"});
        for (kind, object, warned) in [
            ("Pod", off, false),
            ("Service", json!({"metadata": {"name": "web"}}), false),
            ("Pod", bad, true),
        ] {
            let r = mutate(&review(kind, object), &settings());
            let resp = r.response.unwrap();
            assert!(resp.allowed);
            assert_eq!(resp.patch, None);
            assert_eq!(!resp.warnings.is_empty(), warned, "{:?}", resp.warnings);
            if warned {
                assert!(
                    resp.warnings[0].contains("sidecar.istio.io/proxyCPU"),
                    "{:?}",
                    resp.warnings
                );
            }
        }
    }

    #[test]
    fn an_invalid_mesh_resource_is_refused_with_the_field_path() {
        let vs = json!({
            "apiVersion": "networking.istio.io/v1",
            "kind": "VirtualService",
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {"hosts": ["web"], "http": [{"timeout": "soon", "route": [{"destination": {"host": "web"}}]}]}
        });
        let r = validate(&review("VirtualService", vs.clone()));
        let resp = r.response.unwrap();
        assert!(!resp.allowed);
        let status = resp.status.unwrap();
        assert_eq!(status.code, 422);
        assert!(
            status.message.contains("spec.http[0].timeout"),
            "{}",
            status.message
        );
        let mut good = vs;
        good["spec"]["http"][0]["timeout"] = json!("5s");
        assert!(
            validate(&review("VirtualService", good))
                .response
                .unwrap()
                .allowed
        );
    }
}
