//! How clients reach one Service: the routes of the VirtualService that
//! owns its host and, for every host those routes name, its ports and the
//! DestinationRule. The controller resolves hosts (short names to FQDNs)
//! and compiles this into the typed wire with [`crate::routing`]; proxies
//! never see it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::discovery::ServicePort;
use crate::istio::destination_rule::DestinationRuleSpec;
use crate::istio::virtual_service::{HttpRoute, TcpRoute, TlsRoute};
use crate::policy::LocalRateLimitSpec;

/// Routing and policy for one Service, as its clients' proxies apply it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceTraffic {
    /// `namespace/name` of the VirtualService whose routes these are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub virtual_service: Option<String>,
    /// HTTP routes, destination hosts as FQDNs; empty: one default route.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRoute>,
    /// TCP routes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tcp: Vec<TcpRoute>,
    /// TLS routes (by SNI).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tls: Vec<TlsRoute>,
    /// Every host the routes name, and the Service itself, by FQDN.
    #[serde(default)]
    pub backends: BTreeMap<String, Backend>,
}

/// A destination host: its ports and the DestinationRule for it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Backend {
    /// Ports, to resolve a route's port to endpoint ports.
    #[serde(default)]
    pub ports: Vec<ServicePort>,
    /// `namespace/name` of the DestinationRule that applies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destination_rule: Option<String>,
    /// Its spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<DestinationRuleSpec>,
}

/// What a workload's own proxy enforces on requests to it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadPolicy {
    /// LocalRateLimits that select the workload.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimit>,
    /// `REGISTRY_ONLY` blocks destinations the mesh does not know;
    /// `None` or `ALLOW_ANY` passes them through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outbound_traffic_policy: Option<String>,
}

/// One LocalRateLimit.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RateLimit {
    /// `namespace/name`.
    pub name: String,
    /// Its spec.
    pub spec: LocalRateLimitSpec,
}

/// The cluster's DNS suffix for Services.
pub const CLUSTER_SUFFIX: &str = "svc.cluster.local";

/// The FQDN a host names from `namespace`, as Istio reads it: `orders`
/// is `orders.<namespace>.svc.cluster.local`, `orders.shop` is
/// `orders.shop.svc.cluster.local`; anything longer is taken as written.
pub fn fqdn(host: &str, namespace: &str) -> String {
    let host = host.trim_end_matches('.');
    match host.matches('.').count() {
        0 => format!("{host}.{namespace}.{CLUSTER_SUFFIX}"),
        1 => format!("{host}.{CLUSTER_SUFFIX}"),
        _ if host.ends_with(".svc") => format!("{host}.cluster.local"),
        _ => host.to_string(),
    }
}

/// Whether a VirtualService host (already an FQDN, or a wildcard such as
/// `*.shop.svc.cluster.local` or `*`) covers `hostname`.
pub fn host_matches(pattern: &str, hostname: &str) -> bool {
    match pattern.strip_prefix('*') {
        Some(suffix) => hostname.ends_with(suffix),
        None => pattern == hostname,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_names_resolve_in_the_namespace() {
        assert_eq!(fqdn("orders", "shop"), "orders.shop.svc.cluster.local");
        assert_eq!(fqdn("orders.pay", "shop"), "orders.pay.svc.cluster.local");
        assert_eq!(
            fqdn("orders.pay.svc", "shop"),
            "orders.pay.svc.cluster.local"
        );
        assert_eq!(
            fqdn("orders.pay.svc.cluster.local.", "shop"),
            "orders.pay.svc.cluster.local"
        );
        assert_eq!(fqdn("api.example.com", "shop"), "api.example.com");
    }

    #[test]
    fn wildcards_cover_suffixes() {
        assert!(host_matches("*", "a.b.svc.cluster.local"));
        assert!(host_matches(
            "*.shop.svc.cluster.local",
            "orders.shop.svc.cluster.local"
        ));
        assert!(!host_matches(
            "*.shop.svc.cluster.local",
            "orders.pay.svc.cluster.local"
        ));
        assert!(!host_matches("orders", "orders.shop.svc.cluster.local"));
    }
}
