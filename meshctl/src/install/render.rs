//! The objects of an installation, in the order they are applied. The
//! Helm chart `charts/mesh` renders the same objects from the same values
//! (but the Namespace, which Helm manages itself); a test compares them.

use base64::Engine;
use serde_json::{Value, json};

use super::values::Values;

/// The controller's name: its Deployment, Service, ServiceAccount, RBAC.
pub const CONTROLLER: &str = "mesh-controller";
/// The Secret holding the issuer when the installation makes it.
pub const IDENTITY_SECRET: &str = "mesh-identity";
/// The mutating webhook configuration.
pub const INJECTOR: &str = "mesh-sidecar-injector";
/// The validating webhook configuration.
pub const VALIDATOR: &str = "mesh-validator";
/// The label on every object of the installation.
pub use api::inject::PART_OF;
/// The label on the mesh's own namespace: no webhook ever applies there.
pub const CONTROL_PLANE: &str = "mesh.io/control-plane";
/// Where the controller reads the issuer.
const IDENTITY_DIR: &str = "/var/run/mesh/identity";
/// The mesh's API groups (the validating webhook's scope).
pub const GROUPS: [&str; 6] = [
    "networking.istio.io",
    "security.istio.io",
    "telemetry.istio.io",
    "linkerd.io",
    "split.smi-spec.io",
    "policy.mesh.io",
];

fn labels() -> Value {
    json!({ PART_OF.0: PART_OF.1 })
}

fn b64(s: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// Every object, in apply order: CRDs, the Namespace, then what lives in
/// it, then the webhooks (last, so that they point at a ready controller).
pub fn render(v: &Values, namespace: &str) -> anyhow::Result<Vec<Value>> {
    check(v)?;
    let mut out: Vec<Value> = serde_yaml_ng::Deserializer::from_str(&api::crd::render())
        .map(<Value as serde::Deserialize>::deserialize)
        .collect::<Result<_, _>>()?;
    out.retain(|d| !d.is_null());
    out.push(json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": namespace, "labels": {
            PART_OF.0: PART_OF.1, CONTROL_PLANE: "true", api::inject::NAMESPACE_LABEL: "disabled",
        }},
    }));
    out.push(json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {"name": CONTROLLER, "namespace": namespace, "labels": labels()},
    }));
    out.extend(rbac(namespace));
    if v.identity.external_secret.is_empty() {
        out.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": IDENTITY_SECRET, "namespace": namespace, "labels": labels()},
            "type": "kubernetes.io/tls",
            "data": {
                "ca.crt": b64(&v.identity.trust_anchors_pem),
                "tls.crt": b64(&v.identity.issuer.cert_pem),
                "tls.key": b64(&v.identity.issuer.key_pem),
            },
        }));
    }
    if !v.mesh_config.is_empty() {
        out.push(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": api::istio::mesh_config::CONFIG_MAP, "namespace": namespace, "labels": labels()},
            "data": {api::istio::mesh_config::KEY: serde_yaml_ng::to_string(&v.mesh_config)?.trim_end()},
        }));
    }
    out.extend(prometheus(v, namespace)?);
    out.push(service(namespace));
    out.push(deployment(v, namespace));
    out.extend(webhooks(v, namespace));
    Ok(out)
}

/// Istio's scrape job for meshed pods (the chart's file, shared).
pub const SCRAPE_CONFIGS: &str = include_str!("../../../charts/mesh/files/prometheus-scrape.yaml");
const POD_MONITOR_SPEC: &str = include_str!("../../../charts/mesh/files/pod-monitor-spec.yaml");

/// The scrape job's ConfigMap and the PodMonitor, as the values ask.
fn prometheus(v: &Values, namespace: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    if v.prometheus.scrape_config {
        out.push(json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "mesh-prometheus", "namespace": namespace, "labels": labels()},
            "data": {"scrape-configs.yaml": SCRAPE_CONFIGS.trim_end()},
        }));
    }
    if v.prometheus.pod_monitor {
        let spec: Value = serde_yaml_ng::from_str(POD_MONITOR_SPEC)?;
        out.push(json!({
            "apiVersion": "monitoring.coreos.com/v1",
            "kind": "PodMonitor",
            "metadata": {"name": "mesh-proxies", "namespace": namespace, "labels": labels()},
            "spec": spec,
        }));
    }
    Ok(out)
}

/// What the values must say before anything is rendered.
fn check(v: &Values) -> anyhow::Result<()> {
    if v.identity.trust_anchors_pem.trim().is_empty() {
        anyhow::bail!(
            "values: identity.trustAnchorsPEM is empty: give the trust anchors (meshctl install generates them when no identity is given)"
        );
    }
    if v.identity.external_secret.is_empty()
        && (v.identity.issuer.cert_pem.trim().is_empty()
            || v.identity.issuer.key_pem.trim().is_empty())
    {
        anyhow::bail!(
            "values: identity.issuer.certPEM and identity.issuer.keyPEM are needed, or identity.externalSecret naming a Secret with tls.crt, tls.key and ca.crt"
        );
    }
    if !matches!(v.webhook.failure_policy.as_str(), "Fail" | "Ignore") {
        anyhow::bail!(
            "values: webhook.failurePolicy is {:?}: use Fail or Ignore",
            v.webhook.failure_policy
        );
    }
    Ok(())
}

fn rbac(namespace: &str) -> [Value; 2] {
    let read = json!(["get", "list", "watch"]);
    [
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": {"name": CONTROLLER, "labels": labels()},
            "rules": [
                {"apiGroups": [""], "resources": ["pods", "services", "namespaces", "serviceaccounts", "endpoints"], "verbs": read},
                {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch", "create", "update", "patch"]},
                {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": read},
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
                {"apiGroups": ["admissionregistration.k8s.io"], "resources": ["mutatingwebhookconfigurations", "validatingwebhookconfigurations"], "verbs": ["get", "list", "watch", "update", "patch"]},
                {"apiGroups": GROUPS, "resources": ["*"], "verbs": read},
                {"apiGroups": GROUPS, "resources": ["*/status"], "verbs": ["get", "update", "patch"]},
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": CONTROLLER, "labels": labels()},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": CONTROLLER},
            "subjects": [{"kind": "ServiceAccount", "name": CONTROLLER, "namespace": namespace}],
        }),
    ]
}

fn service(namespace: &str) -> Value {
    let port = |name: &str, port: u16, target: u16| json!({"name": name, "port": port, "targetPort": target, "protocol": "TCP"});
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": CONTROLLER, "namespace": namespace, "labels": labels()},
        "spec": {
            "selector": {"app": CONTROLLER},
            "ports": [
                port("grpc", 15012, 15012),
                port("https-webhook", 443, 15017),
                port("http-debug", 15014, 15014),
            ],
        },
    })
}

fn deployment(v: &Values, namespace: &str) -> Value {
    let secret = if v.identity.external_secret.is_empty() {
        IDENTITY_SECRET
    } else {
        &v.identity.external_secret
    };
    let mut args = vec![
        format!("--trust-anchors={IDENTITY_DIR}/ca.crt"),
        format!("--issuer-cert={IDENTITY_DIR}/tls.crt"),
        format!("--issuer-key={IDENTITY_DIR}/tls.key"),
        format!("--trust-domain={}", v.trust_domain),
        format!("--cert-lifetime={}", v.cert_lifetime),
        "--webhook-listen=0.0.0.0:15017".into(),
        "--debug-listen=0.0.0.0:15014".into(),
        format!("--proxy-image={}", v.proxy.image),
        format!("--proxy-image-pull-policy={}", v.proxy.image_pull_policy),
    ];
    if v.native_sidecars == Some(true) {
        args.push("--native-sidecars".into());
    }
    let field = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": CONTROLLER, "namespace": namespace, "labels": labels()},
        "spec": {
            "replicas": v.controller.replicas,
            "selector": {"matchLabels": {"app": CONTROLLER}},
            "template": {
                "metadata": {"labels": {
                    "app": CONTROLLER, PART_OF.0: PART_OF.1, api::inject::INJECT: "false",
                }},
                "spec": {
                    "serviceAccountName": CONTROLLER,
                    "containers": [{
                        "name": "controller",
                        "image": v.controller.image,
                        "imagePullPolicy": v.controller.image_pull_policy,
                        "args": args,
                        "env": [
                            field("POD_NAME", "metadata.name"),
                            field("POD_NAMESPACE", "metadata.namespace"),
                            {"name": "RUST_LOG", "value": v.controller.log_level},
                        ],
                        "ports": [
                            {"name": "grpc", "containerPort": 15012, "protocol": "TCP"},
                            {"name": "webhook", "containerPort": 15017, "protocol": "TCP"},
                            {"name": "debug", "containerPort": 15014, "protocol": "TCP"},
                        ],
                        "readinessProbe": {
                            "httpGet": {"path": "/ready", "port": 15014},
                            "periodSeconds": 2,
                        },
                        "resources": {
                            "requests": {"cpu": "50m", "memory": "64Mi"},
                            "limits": {"memory": "512Mi"},
                        },
                        "securityContext": {
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            "runAsNonRoot": true,
                            "readOnlyRootFilesystem": true,
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": [{"name": "identity", "mountPath": IDENTITY_DIR, "readOnly": true}],
                    }],
                    "volumes": [{"name": "identity", "secret": {"secretName": secret}}],
                },
            },
        },
    })
}

fn webhooks(v: &Values, namespace: &str) -> [Value; 2] {
    let client = |path: &str| {
        json!({
            "service": {"name": CONTROLLER, "namespace": namespace, "path": path, "port": 443},
            "caBundle": b64(&v.identity.trust_anchors_pem),
        })
    };
    let expr = |key: &str, op: &str, values: &[&str]| {
        if values.is_empty() {
            json!({"key": key, "operator": op})
        } else {
            json!({"key": key, "operator": op, "values": values})
        }
    };
    let common = |name: &str, path: &str| {
        json!({
            "name": name,
            "clientConfig": client(path),
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
            "failurePolicy": v.webhook.failure_policy,
            "timeoutSeconds": v.webhook.timeout_seconds,
        })
    };
    let pods = json!([{
        "apiGroups": [""], "apiVersions": ["v1"], "operations": ["CREATE"],
        "resources": ["pods"], "scope": "Namespaced",
    }]);
    let with = |mut base: Value, extra: Value| {
        if let (Some(b), Value::Object(e)) = (base.as_object_mut(), extra) {
            b.extend(e);
        }
        base
    };
    let ns_label = api::inject::NAMESPACE_LABEL;
    let pod_label = api::inject::INJECT;
    [
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "MutatingWebhookConfiguration",
            "metadata": {"name": INJECTOR, "labels": labels()},
            "webhooks": [
                // Istio's pair: the namespace asks (and the pod does not
                // refuse), or the pod asks in a namespace that says nothing.
                with(common("namespace.sidecar-injector.mesh.io", "/inject"), json!({
                    "rules": pods,
                    "reinvocationPolicy": "Never",
                    "namespaceSelector": {"matchExpressions": [
                        expr(ns_label, "In", &["enabled"]), expr(CONTROL_PLANE, "DoesNotExist", &[]),
                    ]},
                    "objectSelector": {"matchExpressions": [expr(pod_label, "NotIn", &["false"])]},
                })),
                with(common("object.sidecar-injector.mesh.io", "/inject"), json!({
                    "rules": pods,
                    "reinvocationPolicy": "Never",
                    "namespaceSelector": {"matchExpressions": [
                        expr(ns_label, "DoesNotExist", &[]), expr(CONTROL_PLANE, "DoesNotExist", &[]),
                    ]},
                    "objectSelector": {"matchExpressions": [expr(pod_label, "In", &["true"])]},
                })),
            ],
        }),
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": "ValidatingWebhookConfiguration",
            "metadata": {"name": VALIDATOR, "labels": labels()},
            "webhooks": [with(common("validation.mesh.io", "/validate"), json!({
                "rules": [{
                    "apiGroups": GROUPS, "apiVersions": ["*"], "operations": ["CREATE", "UPDATE"],
                    "resources": ["*"], "scope": "Namespaced",
                }],
                "namespaceSelector": {"matchExpressions": [expr(CONTROL_PLANE, "DoesNotExist", &[])]},
            }))],
        }),
    ]
}
