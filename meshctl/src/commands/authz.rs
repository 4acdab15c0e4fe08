//! `meshctl authz check POD`: the AuthorizationPolicies that apply to a
//! pod, in the order its proxy evaluates them, from the local runtime's
//! objects or the cluster's (like `istioctl x authz check`).

use std::collections::BTreeMap;

use api::istio::Resource;
use api::istio::security::AuthorizationPolicySpec;
use api::manifest::Object;
use serde::Serialize;

use crate::cli::AuthzCheckArgs;
use crate::k8s::Target;
use crate::local::StateDir;
use crate::local::client::Client;

/// One applying policy.
#[derive(Debug, Serialize, PartialEq)]
pub struct Applying {
    /// Its place in the evaluation (1 first; AUDIT policies only record).
    pub order: usize,
    /// CUSTOM, DENY, ALLOW or AUDIT.
    pub action: String,
    /// `namespace/name`.
    pub policy: String,
    /// How many rules (none: matches nothing).
    pub rules: usize,
    /// Why it applies.
    pub scope: String,
}

/// What the pod's proxy does with a request.
#[derive(Debug, Serialize, PartialEq)]
pub struct Check {
    /// `namespace/name` of the pod.
    pub pod: String,
    /// The policies, in evaluation order.
    pub policies: Vec<Applying>,
    /// What happens to a request that no policy matches.
    pub otherwise: String,
}

const ORDER: [&str; 4] = ["CUSTOM", "DENY", "ALLOW", "AUDIT"];

/// The check of a pod of `namespace` labelled `labels` against
/// `objects`.
pub fn check_pod(
    pod: &str,
    namespace: &str,
    labels: &BTreeMap<String, String>,
    objects: &[Object],
) -> Check {
    let mut applying: Vec<(&str, &Resource<AuthorizationPolicySpec>)> = objects
        .iter()
        .filter_map(|o| match o {
            Object::AuthorizationPolicy(p) if api::authz::applies(p, namespace, labels) => {
                Some((p.spec.action.as_deref().unwrap_or("ALLOW"), &**p))
            }
            _ => None,
        })
        .collect();
    let rank = |a: &str| ORDER.iter().position(|x| *x == a).unwrap_or(ORDER.len());
    applying.sort_by_key(|(a, p)| (rank(a), p.address()));
    let policies: Vec<Applying> = applying
        .iter()
        .enumerate()
        .map(|(i, (action, p))| {
            let ns = p.namespace();
            let selector = p
                .spec
                .selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref());
            let scope = match (
                api::istio::ROOT_NAMESPACES.contains(&ns) && ns != namespace,
                selector,
            ) {
                (true, None) => "mesh-wide (root namespace)".to_string(),
                (true, Some(s)) => format!("mesh-wide, selects {}", labels_text(s)),
                (false, None) => format!("namespace {ns}"),
                (false, Some(s)) => format!("selects {}", labels_text(s)),
            };
            Applying {
                order: i + 1,
                action: action.to_string(),
                policy: p.address(),
                rules: p.spec.rules.as_ref().map_or(0, Vec::len),
                scope,
            }
        })
        .collect();
    let otherwise = if policies.iter().any(|p| p.action == "ALLOW") {
        "denied: ALLOW policies apply, so a request that none of them matches is refused (403 RBAC: access denied)"
    } else if policies.is_empty() {
        "allowed: no AuthorizationPolicy applies"
    } else {
        "allowed: no ALLOW policy applies, so what no DENY policy matches goes through"
    };
    Check {
        pod: format!("{namespace}/{pod}"),
        policies,
        otherwise: otherwise.to_string(),
    }
}

fn labels_text(l: &BTreeMap<String, String>) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs the check.
pub async fn check(args: &AuthzCheckArgs) -> anyhow::Result<i32> {
    let state = StateDir::resolve(args.state.state_dir.clone());
    let ns = &args.namespace;
    let (pod, labels, objects) = match crate::k8s::target(&args.kube, &state).await? {
        Target::Local => {
            let pod = super::exec::find_pod(&state, ns, &args.pod).await?;
            let objects: Vec<Object> = Client::new(state).get("/objects").await?;
            (pod.name, pod.labels, objects)
        }
        Target::Kubernetes(client) => {
            let pod = crate::k8s::find_pod(&client, ns, &args.pod).await?;
            let read = crate::k8s::objects::read(&client).await?;
            (
                pod.metadata.name.unwrap_or_default(),
                pod.metadata.labels.unwrap_or_default(),
                read.objects,
            )
        }
    };
    let c = check_pod(&pod, ns, &labels, &objects);
    if crate::output::print_data(args.output, &c)? {
        return Ok(0);
    }
    println!("pod {}", c.pod);
    let rows: Vec<Vec<String>> = c
        .policies
        .iter()
        .map(|p| {
            vec![
                p.order.to_string(),
                p.action.clone(),
                p.policy.clone(),
                p.rules.to_string(),
                p.scope.clone(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        crate::output::table(&["ORDER", "ACTION", "POLICY", "RULES", "APPLIES"], &rows);
    }
    println!("otherwise: {}", c.otherwise);
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(yaml: &str) -> Vec<Object> {
        let (docs, errors) = api::manifest::parse("t", yaml);
        assert!(errors.is_empty(), "{errors:?}");
        docs.into_iter().map(|d| d.object).collect()
    }

    #[test]
    fn policies_are_listed_in_evaluation_order_with_their_scope() {
        let o = objects(
            "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: payment, namespace: pay}
spec:
  selector: {matchLabels: {app: payment-service}}
  rules: [{to: [{operation: {methods: [POST]}}]}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: istio-system}
spec: {action: DENY, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: watch, namespace: pay}
spec: {action: AUDIT, rules: [{}]}
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: other, namespace: pay}
spec:
  selector: {matchLabels: {app: web}}
  action: DENY
  rules: [{}]
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: elsewhere, namespace: shop}
spec: {}
",
        );
        let labels = [("app".to_string(), "payment-service".to_string())].into();
        let c = check_pod("payment-1", "pay", &labels, &o);
        let got: Vec<(usize, &str, &str, usize, &str)> = c
            .policies
            .iter()
            .map(|p| {
                (
                    p.order,
                    p.action.as_str(),
                    p.policy.as_str(),
                    p.rules,
                    p.scope.as_str(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                (
                    1,
                    "DENY",
                    "istio-system/deny-all",
                    1,
                    "mesh-wide (root namespace)"
                ),
                (2, "ALLOW", "pay/payment", 1, "selects app=payment-service"),
                (3, "AUDIT", "pay/watch", 1, "namespace pay"),
            ]
        );
        assert!(c.otherwise.starts_with("denied: ALLOW policies apply"));
        let none = check_pod("web-1", "shop", &Default::default(), &o[..1]);
        assert!(
            none.policies.is_empty()
                && none
                    .otherwise
                    .starts_with("allowed: no AuthorizationPolicy")
        );
    }
}
