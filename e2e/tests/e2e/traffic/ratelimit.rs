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
