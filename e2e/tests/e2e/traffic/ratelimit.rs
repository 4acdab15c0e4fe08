//! Local rate limiting: the native LocalRateLimit policy, per workload and
//! per route (by the client's VirtualService route name), enforced by the
//! server's proxy with 429 and the `RL` flag.

use std::time::Duration;

use e2e::{Cluster, client, needs_root, versioned};

use super::*;

const POLICY: &str = r#"
apiVersion: policy.mesh.io/v1alpha1
kind: LocalRateLimit
metadata: {name: api, namespace: rl}
spec:
  selector: {matchLabels: {app: api}}
  tokenBucket: {maxTokens: 10, tokensPerFill: 10, fillInterval: 1h}
  routes:
  - match: {name: checkout}
    tokenBucket: {maxTokens: 3, tokensPerFill: 3, fillInterval: 1h}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: api, namespace: rl}
spec:
  hosts: [api]
  http:
  - name: checkout
    match: [{uri: {prefix: /checkout}}]
    route: [{destination: {host: api}}]
  - route: [{destination: {host: api}}]
"#;

#[test]
#[ignore = "needs root"]
fn local_rate_limits_per_workload_and_route() {
    needs_root();
    let c = Cluster::up("ratelimit", &[]);
    c.apply(&client("rl", true));
    c.apply(&versioned("rl", "api", 8080, &[("v1", 1, "")]));
    c.wait_ready("rl", "client", 1);
    let api = c.wait_ready("rl", "api-v1", 1).remove(0);
    let ip = api.ip.unwrap().to_string();
    c.apply(POLICY);
    until(
        "the policy at the server's proxy",
        Duration::from_secs(5),
        || {
            let out = c.exec_ok(
                "rl",
                "deploy/api-v1",
                &["curl", "-s", "http://127.0.0.1:15000/config_dump"],
            );
            let dump: serde_json::Value = serde_json::from_str(&out).unwrap();
            dump["targets"][&ip]["rate_limits"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        },
    );
    let codes = |path: &str, n| -> Vec<u16> {
        requests(&c, "rl", n, 1, &[&format!("http://api:8080{path}")])
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    };
    let other = codes("/other", 20);
    assert_eq!(other.iter().filter(|s| **s == 200).count(), 10, "{other:?}");
    assert_eq!(other.iter().filter(|s| **s == 429).count(), 10, "{other:?}");
    assert!(other[..10].iter().all(|s| *s == 200), "{other:?}");
    let checkout = codes("/checkout/cart", 10);
    assert_eq!(
        checkout.iter().filter(|s| **s == 200).count(),
        3,
        "{checkout:?}"
    );
    assert_eq!(
        checkout.iter().filter(|s| **s == 429).count(),
        7,
        "{checkout:?}"
    );
    let metrics = c.exec_ok(
        "rl",
        "deploy/api-v1",
        &["curl", "-s", "http://127.0.0.1:15020/metrics"],
    );
    let refused = metrics
        .lines()
        .find(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains("response_flags=\"RL\"")
                && l.contains("response_code=\"429\"")
        })
        .unwrap_or_else(|| panic!("no RL series:\n{metrics}"));
    assert!(refused.ends_with(" 17"), "{refused}");
}

/// Istio's local rate limit as users copy it: the EnvoyFilter that
/// inserts envoy.filters.http.local_ratelimit, read as a LocalRateLimit
/// (said so on apply) and enforced by the server's proxy; another
/// EnvoyFilter is refused with its field and nothing applied.
const ENVOY_FILTER: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: local-ratelimit, namespace: ef}
spec:
  workloadSelector: {labels: {app: api}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener: {filterChain: {filter: {name: "envoy.filters.network.http_connection_manager"}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
            token_bucket: {max_tokens: 4, tokens_per_fill: 4, fill_interval: 3600s}
            filter_enabled:
              runtime_key: local_rate_limit_enabled
              default_value: {numerator: 100, denominator: HUNDRED}
            filter_enforced:
              runtime_key: local_rate_limit_enforced
              default_value: {numerator: 100, denominator: HUNDRED}
"#;

#[test]
#[ignore = "needs root"]
fn the_local_rate_limit_envoy_filter_users_copy() {
    needs_root();
    let c = Cluster::up("envoyfilter", &[]);
    c.apply(&client("ef", true));
    c.apply(&versioned("ef", "api", 8080, &[("v1", 1, "")]));
    c.wait_ready("ef", "client", 1);
    c.wait_ready("ef", "api-v1", 1);
    let codes = || -> Vec<u16> {
        requests(&c, "ef", 6, 1, &["http://api:8080/"])
            .into_iter()
            .map(|(s, _)| s)
            .collect()
    };
    assert!(
        codes().iter().all(|s| *s == 200),
        "limited before any policy"
    );
    let lua = ENVOY_FILTER.replace(
        "envoy.filters.http.local_ratelimit",
        "envoy.filters.http.lua",
    );
    let out = c.meshctl_input(&["apply", "-f", "-"], &lua);
    assert!(!out.status.success());
    let err = e2e::text(&out.stderr);
    assert!(
        err.contains("spec.configPatches[0].patch.value.name") && err.contains("LocalRateLimit"),
        "{err}"
    );
    let out = c.meshctl_input(&["apply", "-f", "-"], ENVOY_FILTER);
    assert!(out.status.success(), "{}", e2e::text(&out.stderr));
    let warned = e2e::text(&out.stderr);
    assert!(
        warned.contains("EnvoyFilter ef/local-ratelimit read as policy.mesh.io/v1alpha1 LocalRateLimit: 4 tokens"),
        "{warned}"
    );
    until(
        "the bucket at the server's proxy",
        Duration::from_secs(10),
        || codes().contains(&429),
    );
    // The bucket is empty now: whatever comes is refused.
    assert!(codes().iter().all(|s| *s == 429));
}
