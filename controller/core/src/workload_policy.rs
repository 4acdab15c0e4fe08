//! What a pod's own proxy enforces, attached to the pod's own discovery
//! resource: the LocalRateLimits that select it, the PeerAuthentication
//! in force ([`peer_auth`](crate::peer_auth)), the AuthorizationPolicies
//! that apply to it ([`api::authz`]), the JWT issuers of its
//! RequestAuthentications ([`api::jwt`]), the Telemetry resources that
//! apply ([`api::telemetry`]), and the `outboundTrafficPolicy` of the Sidecar that applies to it (one with a
//! matching `workloadSelector` in its namespace, else the namespace's
//! selector-less one, else the root namespace's, as in Istio).

use api::cluster::{self, MeshConfig};
use api::istio::Resource;
use api::istio::service_entry::SidecarSpec;
use api::traffic::{RateLimit, WorkloadPolicy};

/// Istio's root namespace for mesh-wide Sidecars; ours is `mesh-system`.
pub const ROOT_NAMESPACE: &str = "mesh-system";

/// The policy of `pod`, `None` when nothing applies.
pub fn for_pod(config: &MeshConfig, pod: &cluster::Pod) -> Option<api::proto::WorkloadPolicy> {
    let rate_limits: Vec<RateLimit> = config
        .rate_limits
        .iter()
        .filter(|rl| rl.namespace() == pod.namespace)
        .filter(|rl| {
            rl.spec
                .selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .is_none_or(|m| cluster::labels_match(m, &pod.labels))
        })
        .map(|rl| RateLimit {
            name: format!(
                "{}/{}",
                pod.namespace,
                rl.metadata.name.as_deref().unwrap_or_default()
            ),
            spec: rl.spec.clone(),
        })
        .collect();
    let outbound_traffic_policy = sidecar(config, pod)
        .and_then(|s| s.spec.outbound_traffic_policy.as_ref())
        .and_then(|o| o.mode.clone());
    let peer_auth = crate::peer_auth::for_pod(config, pod);
    let mut authz: Vec<api::proto::AuthzPolicy> = config
        .authorization_policies
        .iter()
        .filter(|p| api::authz::applies(p, &pod.namespace, &pod.labels))
        .map(api::authz::compile)
        .collect();
    authz.sort_by(|a, b| a.name.cmp(&b.name));
    let ext_authz = api::authz::ext::providers(&authz, &config.mesh);
    let mut authn: Vec<_> = config
        .request_authentications
        .iter()
        .filter(|ra| api::jwt::applies(ra, &pod.namespace, &pod.labels))
        .collect();
    authn.sort_by_key(|ra| ra.address());
    let jwt: Vec<api::proto::JwtProvider> = authn
        .into_iter()
        .flat_map(|ra| api::jwt::compile(ra, &config.jwks))
        .collect();
    let telemetry = api::telemetry::compile(
        &config.telemetries,
        &config.mesh,
        &pod.namespace,
        &pod.labels,
    );
    if rate_limits.is_empty()
        && telemetry.is_none()
        && outbound_traffic_policy.is_none()
        && !pod.app_exited
        && peer_auth.is_none()
        && authz.is_empty()
        && jwt.is_empty()
    {
        return None;
    }
    let policy = WorkloadPolicy {
        rate_limits,
        outbound_traffic_policy,
    };
    match api::routing::workload_policy(&policy) {
        Ok(p) => Some(api::proto::WorkloadPolicy {
            app_exited: pod.app_exited,
            peer_auth,
            authz,
            jwt,
            ext_authz,
            telemetry,
            ..p
        }),
        Err(e) => {
            tracing::error!(pod = %pod.name, namespace = %pod.namespace, error = %e, "workload policy not compiled");
            None
        }
    }
}

fn sidecar<'a>(config: &'a MeshConfig, pod: &cluster::Pod) -> Option<&'a Resource<SidecarSpec>> {
    let selector = |s: &Resource<SidecarSpec>| {
        s.spec
            .workload_selector
            .as_ref()
            .and_then(|w| w.labels.as_ref())
            .filter(|l| !l.is_empty())
            .cloned()
    };
    let mut in_ns: Vec<_> = config
        .sidecars
        .iter()
        .filter(|s| s.namespace() == pod.namespace)
        .collect();
    in_ns.sort_by_key(|s| s.metadata.name.clone());
    in_ns
        .iter()
        .find(|s| selector(s).is_some_and(|l| cluster::labels_match(&l, &pod.labels)))
        .or_else(|| in_ns.iter().find(|s| selector(s).is_none()))
        .copied()
        .or_else(|| {
            config
                .sidecars
                .iter()
                .find(|s| s.namespace() == ROOT_NAMESPACE && selector(s).is_none())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::pod;

    fn config(yaml: &str) -> MeshConfig {
        let mut c = MeshConfig::default();
        for doc in yaml.split("---") {
            let v: serde_json::Value = serde_yaml_ng::from_str(doc).unwrap();
            match v["kind"].as_str().unwrap() {
                "Sidecar" => c.sidecars.push(serde_json::from_value(v).unwrap()),
                "LocalRateLimit" => c.rate_limits.push(serde_json::from_value(v).unwrap()),
                k => panic!("{k}"),
            }
        }
        c
    }

    const CONFIG: &str = "
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: default, namespace: mesh-system}
spec: {outboundTrafficPolicy: {mode: REGISTRY_ONLY}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: open, namespace: shop}
spec: {outboundTrafficPolicy: {mode: ALLOW_ANY}}
---
apiVersion: networking.istio.io/v1
kind: Sidecar
metadata: {name: web, namespace: shop}
spec:
  workloadSelector: {labels: {app: web}}
  outboundTrafficPolicy: {mode: REGISTRY_ONLY}
---
apiVersion: policy.mesh.io/v1alpha1
kind: LocalRateLimit
metadata: {name: api, namespace: shop}
spec:
  selector: {matchLabels: {app: api}}
  tokenBucket: {maxTokens: 1, fillInterval: 1s}
";

    #[test]
    fn the_closest_sidecar_and_the_selecting_rate_limits_apply() {
        let c = config(CONFIG);
        let mode = |ns, app| for_pod(&c, &pod(ns, app)).map(|p| p.outbound());
        use api::proto::OutboundMode::{AllowAny, RegistryOnly};
        assert_eq!(mode("shop", "web"), Some(RegistryOnly));
        assert_eq!(mode("shop", "api"), Some(AllowAny));
        assert_eq!(mode("other", "api"), Some(RegistryOnly));
        let api = for_pod(&c, &pod("shop", "api")).unwrap();
        assert_eq!(api.rate_limits.len(), 1);
        assert_eq!(api.rate_limits[0].name, "shop/api");
        assert!(
            for_pod(&c, &pod("shop", "web"))
                .unwrap()
                .rate_limits
                .is_empty()
        );
        assert!(for_pod(&MeshConfig::default(), &pod("shop", "web")).is_none());
    }
}
