//! An AuthorizationPolicy as proxies receive it, and which workloads it
//! applies to.

use std::collections::BTreeMap;

use crate::istio::Resource;
use crate::istio::security::{AuthorizationPolicySpec, Operation, Source};
use crate::istio::shared::WorkloadSelector;
use crate::proto::{
    AuthzAction, AuthzCondition, AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource,
};

use crate::istio::ROOT_NAMESPACES;

fn list(v: &Option<Vec<String>>) -> Vec<String> {
    v.clone().unwrap_or_default()
}

fn source(s: &Source) -> AuthzSource {
    AuthzSource {
        principals: list(&s.principals),
        not_principals: list(&s.not_principals),
        request_principals: list(&s.request_principals),
        not_request_principals: list(&s.not_request_principals),
        namespaces: list(&s.namespaces),
        not_namespaces: list(&s.not_namespaces),
        ip_blocks: list(&s.ip_blocks),
        not_ip_blocks: list(&s.not_ip_blocks),
        remote_ip_blocks: list(&s.remote_ip_blocks),
        not_remote_ip_blocks: list(&s.not_remote_ip_blocks),
        service_accounts: list(&s.service_accounts),
        not_service_accounts: list(&s.not_service_accounts),
    }
}

fn ports(v: &Option<Vec<String>>) -> Vec<u32> {
    // Validation refuses what does not parse.
    v.iter().flatten().filter_map(|p| p.parse().ok()).collect()
}

fn operation(o: &Operation) -> AuthzOperation {
    AuthzOperation {
        hosts: list(&o.hosts),
        not_hosts: list(&o.not_hosts),
        ports: ports(&o.ports),
        not_ports: ports(&o.not_ports),
        methods: list(&o.methods),
        not_methods: list(&o.not_methods),
        paths: list(&o.paths),
        not_paths: list(&o.not_paths),
    }
}

/// `p` for proxies (validated beforehand).
pub fn compile(p: &Resource<AuthorizationPolicySpec>) -> AuthzPolicy {
    let spec = &p.spec;
    let action = match spec.action.as_deref() {
        Some("DENY") => AuthzAction::Deny,
        Some("AUDIT") => AuthzAction::Audit,
        Some("CUSTOM") => AuthzAction::Custom,
        _ => AuthzAction::Allow,
    };
    let rules = spec
        .rules
        .iter()
        .flatten()
        .map(|r| AuthzRule {
            from: r
                .from
                .iter()
                .flatten()
                .filter_map(|f| f.source.as_ref().map(source))
                .collect(),
            to: r
                .to
                .iter()
                .flatten()
                .filter_map(|t| t.operation.as_ref().map(operation))
                .collect(),
            when: r
                .when
                .iter()
                .flatten()
                .map(|c| AuthzCondition {
                    key: c.key.clone().unwrap_or_default(),
                    values: list(&c.values),
                    not_values: list(&c.not_values),
                })
                .collect(),
        })
        .collect();
    AuthzPolicy {
        name: p.address(),
        action: action as i32,
        rules,
        provider: spec
            .provider
            .as_ref()
            .and_then(|x| x.name.clone())
            .unwrap_or_default(),
    }
}

/// Whether `p` applies to a workload of `namespace` labelled `labels`
/// ([`selects`]).
pub fn applies(
    p: &Resource<AuthorizationPolicySpec>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let targeted =
        p.spec.target_ref.is_some() || p.spec.target_refs.as_ref().is_some_and(|t| !t.is_empty());
    selects(
        p.namespace(),
        p.spec.selector.as_ref(),
        targeted,
        namespace,
        labels,
    )
}

/// Whether a security policy of `policy_ns` with `selector` applies to a
/// workload of `namespace` labelled `labels`: a policy of the root
/// namespace applies in every namespace, any other in its own; its
/// selector, when given, must pick the workload. Policies attached by
/// `targetRef` (gateways, waypoints) apply to no sidecar.
pub fn selects(
    policy_ns: &str,
    selector: Option<&WorkloadSelector>,
    targeted: bool,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    if targeted || (policy_ns != namespace && !ROOT_NAMESPACES.contains(&policy_ns)) {
        return false;
    }
    selector
        .and_then(|s| s.match_labels.as_ref())
        .is_none_or(|m| crate::cluster::labels_match(m, labels))
}
