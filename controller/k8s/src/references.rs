//! Warnings about what a mesh object names and the cluster lacks, as
//! Istio's analyzers give them (ReferencedResourceNotFound): an
//! AuthorizationPolicy's source namespace that does not exist, or a
//! principal whose ServiceAccount does not. The object stays accepted
//! (the namespace or account may come later); the warning says why it
//! matches nothing today.

use std::collections::BTreeSet;

use kube::api::DynamicObject;
use serde_json::Value;

/// What exists in the cluster.
pub struct Known {
    /// Namespace names.
    pub namespaces: BTreeSet<String>,
    /// ServiceAccounts, as (namespace, name).
    pub accounts: BTreeSet<(String, String)>,
}

/// The warnings on `o`, of `kind`: (field path, message) pairs.
pub fn check(o: &DynamicObject, kind: &str, known: &Known) -> Vec<(String, String)> {
    // Without the lists (no permission, not read yet), nothing is known
    // to be missing.
    if kind != "AuthorizationPolicy" || known.namespaces.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let rules = o.data.pointer("/spec/rules").and_then(Value::as_array);
    for (i, rule) in rules.into_iter().flatten().enumerate() {
        let from = rule.get("from").and_then(Value::as_array);
        for (j, f) in from.into_iter().flatten().enumerate() {
            let at =
                |field: &str, k: usize| format!("spec.rules[{i}].from[{j}].source.{field}[{k}]");
            for field in ["namespaces", "notNamespaces"] {
                for (k, ns) in strings(f, field) {
                    if !ns.contains('*') && !known.namespaces.contains(ns) {
                        out.push((at(field, k), missing_namespace(ns)));
                    }
                }
            }
            for field in ["principals", "notPrincipals"] {
                for (k, p) in strings(f, field) {
                    if let Some(m) = principal(p, known) {
                        out.push((at(field, k), m));
                    }
                }
            }
        }
    }
    out
}

fn strings<'a>(from: &'a Value, field: &str) -> impl Iterator<Item = (usize, &'a str)> {
    from.pointer(&format!("/source/{field}"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(k, v)| Some((k, v.as_str()?)))
}

fn missing_namespace(ns: &str) -> String {
    format!(
        "namespace \"{ns}\" does not exist, so no request comes from it yet; check the name, or create the namespace"
    )
}

/// The warning on a principal `<trust domain>/ns/<namespace>/sa/<name>`
/// whose namespace or ServiceAccount does not exist (wildcards and other
/// forms are not checked).
fn principal(p: &str, known: &Known) -> Option<String> {
    if p.contains('*') {
        return None;
    }
    let rest = p.split_once("/ns/")?.1;
    let (ns, sa) = rest.split_once("/sa/")?;
    if ns.is_empty() || sa.is_empty() || sa.contains('/') {
        return None;
    }
    if !known.namespaces.contains(ns) {
        return Some(missing_namespace(ns));
    }
    (!known.accounts.contains(&(ns.to_string(), sa.to_string()))).then(|| {
        format!(
            "ServiceAccount \"{sa}\" does not exist in namespace \"{ns}\", so no workload holds this identity yet; check the name, or create the ServiceAccount"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_namespaces_and_accounts_are_named_by_field_path() {
        let o: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "security.istio.io/v1",
            "kind": "AuthorizationPolicy",
            "metadata": {"name": "pay", "namespace": "shop"},
            "spec": {"rules": [{"from": [{"source": {
                "principals": [
                    "cluster.local/ns/shop/sa/orders",
                    "cluster.local/ns/shop/sa/ordres",
                    "cluster.local/ns/gone/sa/x",
                    "cluster.local/ns/shop/sa/*",
                    "*"
                ],
                "namespaces": ["shop", "nope", "prod-*"]
            }}]}]}
        }))
        .unwrap();
        let known = Known {
            namespaces: ["shop".to_string()].into(),
            accounts: [("shop".to_string(), "orders".to_string())].into(),
        };
        let w = check(&o, "AuthorizationPolicy", &known);
        let fields: Vec<&str> = w.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.rules[0].from[0].source.namespaces[1]",
                "spec.rules[0].from[0].source.principals[1]",
                "spec.rules[0].from[0].source.principals[2]",
            ]
        );
        assert!(
            w[1].1
                .contains("ServiceAccount \"ordres\" does not exist in namespace \"shop\"")
        );
        assert!(w[2].1.contains("namespace \"gone\" does not exist"));
        // Nothing is known to be missing before the namespaces are read.
        let unknown = Known {
            namespaces: BTreeSet::new(),
            accounts: BTreeSet::new(),
        };
        assert!(check(&o, "AuthorizationPolicy", &unknown).is_empty());
        assert!(check(&o, "PeerAuthentication", &known).is_empty());
    }
}
