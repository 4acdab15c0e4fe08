//! CustomResourceDefinitions for the mesh's kinds, generated from the Rust
//! types so that the chart can never drift from what the mesh reads:
//! `cargo xtask codegen` writes [`render`]'s output into `charts/`, and a
//! test fails when the checked-in file is stale.
//!
//! schemars makes OpenAPI 3 schemas; they are then made structural, as
//! Kubernetes requires: no `$ref` (recursion and free-form values keep
//! unknown fields), no `additionalProperties: false` beside `properties`,
//! only the integer formats Kubernetes knows.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::istio::{destination_rule, security, service_entry, telemetry, virtual_service};

/// Where the chart keeps the generated CRDs, from the workspace root.
pub const CHART_PATH: &str = "charts/mesh/crds/mesh-crds.yaml";

/// One kind: its group, versions (the last is stored), names.
struct Kind {
    kind: &'static str,
    plural: &'static str,
    short: &'static [&'static str],
    versions: &'static [&'static str],
    schema: fn() -> Value,
}

fn schema_of<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::openapi3()
        .with(|s| {
            s.inline_subschemas = true;
            s.meta_schema = None;
        })
        .into_generator();
    let root = serde_json::to_value(generator.into_root_schema_for::<T>()).unwrap_or_default();
    structural(root, 0)
}

fn is_null(s: &Value) -> bool {
    s.get("enum")
        .and_then(Value::as_array)
        .is_some_and(|e| e.len() == 1 && e[0].is_null())
        || s.get("type") == Some(&Value::String("null".into()))
}

/// Makes a schema structural (see the module docs).
fn structural(v: Value, depth: usize) -> Value {
    let Value::Object(mut m) = v else { return v };
    if m.contains_key("$ref") || depth > 40 {
        return json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true});
    }
    // `anyOf: [schema, null]` (an optional value) is the schema, nullable.
    if let Some(Value::Array(any)) = m.get("anyOf")
        && any.len() == 2
        && let [inner] = any
            .iter()
            .filter(|s| !is_null(s))
            .collect::<Vec<_>>()
            .as_slice()
    {
        let mut inner = (*inner).clone();
        if let Value::Object(im) = &mut inner {
            im.insert("nullable".into(), Value::Bool(true));
            for (k, v) in m.iter().filter(|(k, _)| k.as_str() != "anyOf") {
                im.entry(k.clone()).or_insert_with(|| v.clone());
            }
        }
        return structural(inner, depth);
    }
    for k in [
        "$schema",
        "title",
        "components",
        "definitions",
        "$defs",
        "propertyNames",
        "examples",
        "example",
    ] {
        m.remove(k);
    }
    // A map with patterned keys (integers: ports) is a map of its values.
    if let Some(Value::Object(pp)) = m.remove("patternProperties")
        && let Some(values) = pp.into_iter().next().map(|(_, v)| v)
    {
        m.insert("additionalProperties".into(), values);
    }
    if m.contains_key("properties") && m.get("additionalProperties") == Some(&Value::Bool(false)) {
        m.remove("additionalProperties");
    }
    if let Some(Value::String(f)) = m.get("format") {
        match f.as_str() {
            "int32" | "int64" | "double" | "float" => {}
            "uint32" | "uint64" | "uint" | "int" => {
                m.insert("format".into(), Value::String("int64".into()));
            }
            _ => {
                m.remove("format");
            }
        }
    }
    // A schema with no type that is not an int-or-string is free-form.
    let typed = m.contains_key("type") || m.contains_key("x-kubernetes-int-or-string");
    if !typed && !m.contains_key("anyOf") && !m.contains_key("oneOf") && !m.contains_key("allOf") {
        m.insert(
            "x-kubernetes-preserve-unknown-fields".into(),
            Value::Bool(true),
        );
    }
    let out: Map<String, Value> = m
        .into_iter()
        .map(|(k, v)| {
            let v = match k.as_str() {
                "properties" => match v {
                    Value::Object(p) => Value::Object(
                        p.into_iter()
                            .map(|(k, v)| (k, structural(v, depth + 1)))
                            .collect(),
                    ),
                    other => other,
                },
                "items" | "additionalProperties" => structural(v, depth + 1),
                "anyOf" | "oneOf" | "allOf" => match v {
                    Value::Array(a) => {
                        Value::Array(a.into_iter().map(|v| structural(v, depth + 1)).collect())
                    }
                    other => other,
                },
                _ => v,
            };
            (k, v)
        })
        .collect();
    Value::Object(out)
}

fn kinds() -> Vec<(&'static str, Vec<Kind>)> {
    let net = crate::istio::NETWORKING_VERSIONS;
    let sec = crate::istio::SECURITY_VERSIONS;
    vec![
        (
            "networking.istio.io",
            vec![
                Kind {
                    kind: "VirtualService",
                    plural: "virtualservices",
                    short: &["vs"],
                    versions: net,
                    schema: schema_of::<virtual_service::VirtualServiceSpec>,
                },
                Kind {
                    kind: "DestinationRule",
                    plural: "destinationrules",
                    short: &["dr"],
                    versions: net,
                    schema: schema_of::<destination_rule::DestinationRuleSpec>,
                },
                Kind {
                    kind: "ServiceEntry",
                    plural: "serviceentries",
                    short: &["se"],
                    versions: net,
                    schema: schema_of::<service_entry::ServiceEntrySpec>,
                },
                Kind {
                    kind: "WorkloadEntry",
                    plural: "workloadentries",
                    short: &["we"],
                    versions: net,
                    schema: schema_of::<service_entry::WorkloadEntrySpec>,
                },
                Kind {
                    kind: "Sidecar",
                    plural: "sidecars",
                    short: &[],
                    versions: net,
                    schema: schema_of::<service_entry::SidecarSpec>,
                },
            ],
        ),
        (
            "security.istio.io",
            vec![
                Kind {
                    kind: "PeerAuthentication",
                    plural: "peerauthentications",
                    short: &["pa"],
                    versions: sec,
                    schema: schema_of::<security::PeerAuthenticationSpec>,
                },
                Kind {
                    kind: "AuthorizationPolicy",
                    plural: "authorizationpolicies",
                    short: &["ap"],
                    versions: sec,
                    schema: schema_of::<security::AuthorizationPolicySpec>,
                },
                Kind {
                    kind: "RequestAuthentication",
                    plural: "requestauthentications",
                    short: &["ra"],
                    versions: sec,
                    schema: schema_of::<security::RequestAuthenticationSpec>,
                },
            ],
        ),
        (
            "telemetry.istio.io",
            vec![Kind {
                kind: "Telemetry",
                plural: "telemetries",
                short: &["telemetry"],
                versions: crate::istio::TELEMETRY_VERSIONS,
                schema: schema_of::<telemetry::TelemetrySpec>,
            }],
        ),
        (
            "linkerd.io",
            vec![Kind {
                kind: "ServiceProfile",
                plural: "serviceprofiles",
                short: &["sp"],
                versions: crate::linkerd::SERVICE_PROFILE_VERSIONS,
                schema: schema_of::<crate::linkerd::ServiceProfileSpec>,
            }],
        ),
        (
            "split.smi-spec.io",
            vec![Kind {
                kind: "TrafficSplit",
                plural: "trafficsplits",
                short: &["ts"],
                versions: crate::linkerd::TRAFFIC_SPLIT_VERSIONS,
                schema: schema_of::<crate::linkerd::TrafficSplitSpec>,
            }],
        ),
        (
            "policy.mesh.io",
            vec![Kind {
                kind: "LocalRateLimit",
                plural: "localratelimits",
                short: &["lrl"],
                versions: crate::policy::POLICY_VERSIONS,
                schema: schema_of::<crate::policy::LocalRateLimitSpec>,
            }],
        ),
    ]
}

/// A mesh kind as the API server serves it: the stored version, which a
/// controller watches.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Served {
    /// e.g. `networking.istio.io`.
    pub group: &'static str,
    /// The stored version, e.g. `v1`.
    pub version: &'static str,
    /// e.g. `VirtualService`.
    pub kind: &'static str,
    /// e.g. `virtualservices`.
    pub plural: &'static str,
}

/// Every mesh kind, at its stored version.
pub fn served() -> Vec<Served> {
    kinds()
        .into_iter()
        .flat_map(|(group, ks)| {
            ks.into_iter().map(move |k| Served {
                group,
                version: k
                    .versions
                    .last()
                    .map(|v| v.rsplit('/').next().unwrap_or(v))
                    .unwrap_or("v1"),
                kind: k.kind,
                plural: k.plural,
            })
        })
        .collect()
}

fn crd(group: &str, k: &Kind) -> Value {
    let spec = (k.schema)();
    let n = k.versions.len();
    let versions: Vec<Value> = k
        .versions
        .iter()
        .enumerate()
        .map(|(i, v)| {
            json!({
                "name": v.rsplit('/').next().unwrap_or(v),
                "served": true,
                "storage": i + 1 == n,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": spec,
                        "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": true},
                    },
                }},
            })
        })
        .collect();
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("{}.{group}", k.plural), "labels": {"app.kubernetes.io/part-of": "mesh"}},
        "spec": {
            "group": group,
            "scope": "Namespaced",
            "names": {
                "kind": k.kind,
                "listKind": format!("{}List", k.kind),
                "plural": k.plural,
                "singular": k.kind.to_ascii_lowercase(),
                "shortNames": k.short,
            },
            "versions": versions,
        },
    })
}

/// Every CRD, as one multi-document YAML file.
pub fn render() -> String {
    let mut out = String::from(
        "# Generated by `cargo xtask codegen` from the api crate's types: do not edit.\n",
    );
    for (group, ks) in kinds() {
        for k in &ks {
            out.push_str("---\n");
            out.push_str(&serde_yaml_ng::to_string(&crd(group, k)).unwrap_or_default());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_in_crds_are_current() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(CHART_PATH);
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == render(),
            "{} is stale: run `cargo xtask codegen` and commit the result",
            path.display()
        );
    }

    fn walk(v: &Value, path: &str, problems: &mut Vec<String>) {
        let Value::Object(m) = v else { return };
        if m.contains_key("$ref") {
            problems.push(format!("{path}: $ref"));
        }
        if m.contains_key("properties") && m.contains_key("additionalProperties") {
            problems.push(format!("{path}: properties with additionalProperties"));
        }
        if m.get("additionalProperties") == Some(&Value::Bool(false))
            || m.contains_key("patternProperties")
        {
            problems.push(format!("{path}: a map that accepts no keys"));
        }
        let ok = m.contains_key("type")
            || m.contains_key("x-kubernetes-int-or-string")
            || m.contains_key("x-kubernetes-preserve-unknown-fields");
        if !ok {
            problems.push(format!("{path}: no type"));
        }
        for (k, v) in m {
            match (k.as_str(), v) {
                ("properties", Value::Object(p)) => p
                    .iter()
                    .for_each(|(n, s)| walk(s, &format!("{path}.{n}"), problems)),
                ("items" | "additionalProperties", s) => walk(s, &format!("{path}[]"), problems),
                _ => {}
            }
        }
    }

    #[test]
    fn schemas_are_structural_and_name_istio_fields() {
        for (group, ks) in kinds() {
            for k in &ks {
                let c = crd(group, k);
                let mut problems = Vec::new();
                walk(
                    &c["spec"]["versions"][0]["schema"]["openAPIV3Schema"],
                    k.kind,
                    &mut problems,
                );
                assert!(problems.is_empty(), "{problems:#?}");
                assert_eq!(
                    c["spec"]["versions"].as_array().map(Vec::len),
                    Some(k.versions.len())
                );
            }
        }
        let vs = crd("networking.istio.io", &kinds()[0].1[0]);
        let http = &vs["spec"]["versions"][2]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]
            ["http"];
        let route = &http["items"]["properties"];
        assert!(
            route["retries"]["properties"]["retryOn"]["type"] == "string",
            "{route}"
        );
        assert!(route["match"]["items"]["properties"]["ignoreUriCase"]["type"] == "boolean");
        assert_eq!(vs["spec"]["versions"][2]["storage"], true);
        assert_eq!(vs["spec"]["versions"][0]["storage"], false);
    }
}
