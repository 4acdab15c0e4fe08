//! AuthorizationPolicy as users copy it from Istio's documentation: the
//! payment service that only the order service may POST to, deny-all,
//! and a DENY on one method, judged on the real principals of meshed
//! clients, on a plaintext client, and on a TCP port.

use std::time::Duration;

use e2e::{Cluster, client, http_and_tcp_app, needs_root, text, wait_for};

/// The payment service (HTTP on 8080, raw TCP on 9091) and two meshed
/// clients with ServiceAccounts of their own.
fn shop() -> String {
    let caller = |name: &str| {
        format!(
            r#"
---
apiVersion: v1
kind: ServiceAccount
metadata: {{name: {name}, namespace: pay}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: {name}, namespace: pay}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: {name}}}}}
  template:
    metadata: {{labels: {{app: {name}}}}}
    spec:
      serviceAccountName: {name}
      containers:
      - name: main
        command: [sleep, infinity]
"#
        )
    };
    format!(
        "{}{}{}",
        http_and_tcp_app("pay", "payment-service"),
        caller("order-service"),
        caller("web")
    )
}

/// The policy from Istio's documentation, as users copy it.
const PAYMENTS: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: payment, namespace: pay}
spec:
  selector:
    matchLabels: {app: payment-service}
  action: ALLOW
  rules:
  - from:
    - source:
        principals: ["cluster.local/ns/pay/sa/order-service"]
    to:
    - operation:
        methods: ["POST"]
        paths: ["/api/payments*"]
"#;

/// Istio's allow-nothing: an ALLOW policy without rules.
const ALLOW_NOTHING: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: allow-nothing, namespace: pay}
spec: {}
";

/// Istio's deny-all: a DENY policy whose one empty rule matches
/// everything.
const DENY_ALL: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-all, namespace: pay}
spec: {action: DENY, rules: [{}]}
";

const NO_DELETE: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-delete, namespace: pay}
spec:
  action: DENY
  rules: [{to: [{operation: {methods: [DELETE]}}]}]
";

/// `curl -X method` from `from` to the payment service's `path`: the body
/// and the status.
fn call(c: &Cluster, from: &str, method: &str, path: &str) -> (String, String) {
    let url = format!("http://payment-service:8080{path}");
    let out = c.exec(
        "pay",
        from,
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "-X",
            method,
            "--data-binary",
            "paid",
            "-w",
            "\n%{http_code}",
            &url,
        ],
    );
    let all = text(&out.stdout);
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", &all));
    (body.to_string(), code.to_string())
}

fn status(c: &Cluster, from: &str, method: &str, path: &str) -> String {
    call(c, from, method, path).1
}

/// Sends `marker` to payment-service's raw port from `from`; what came back.
fn raw(c: &Cluster, from: &str, marker: &str) -> String {
    c.tcp_send("pay", from, "payment-service", 9091, marker)
}

/// `meshctl explain --from FROM -X method` of a request to the payment
/// service, as JSON.
fn explain(c: &Cluster, from: &str, method: &str, path: &str) -> serde_json::Value {
    let url = format!("payment-service:8080{path}");
    let out = c.meshctl_top(&[
        "explain",
        "--from",
        from,
        "-n",
        "pay",
        "-X",
        method,
        "-H",
        "x-trace: 1",
        &url,
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)))
}

/// The `response_code_details` of the refusals payment-service's proxy
/// keeps in its `/config_dump`.
fn denials(c: &Cluster) -> Vec<String> {
    let out = c.meshctl_top(&[
        "proxy-config",
        "all",
        "deploy/payment-service",
        "-n",
        "pay",
        "-o",
        "json",
    ]);
    let dump: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    dump["denials"]
        .as_array()
        .unwrap_or_else(|| panic!("no denials in {dump}"))
        .iter()
        .map(|d| {
            format!(
                "{} {} {}",
                d["method"], d["path"], d["response_code_details"]
            )
        })
        .collect()
}

/// `meshctl explain` names the route, the endpoint, the mode and the
/// deciding policy and rule, for a request the payment policy refuses
/// and one it allows.
fn explained_by_the_payment_policy(c: &Cluster) {
    let x = explain(c, "deploy/web", "POST", "/api/payments/1");
    let o = &x["outbound"];
    assert_eq!(o["target"], "payment-service.pay.svc.cluster.local", "{x}");
    let route = &o["route"];
    assert_eq!(route["action"], "forward", "{x}");
    let dest = &route["destinations"][0];
    assert_eq!(dest["host"], "payment-service.pay.svc.cluster.local", "{x}");
    assert_eq!(dest["port"], 8080, "{x}");
    let ep = &dest["endpoints"][0];
    assert!(
        ep["pod"]
            .as_str()
            .unwrap()
            .starts_with("pay/payment-service-"),
        "{x}"
    );
    assert_eq!(
        ep["identity"], "spiffe://cluster.local/ns/pay/sa/payment-service",
        "{x}"
    );
    let at = &x["inbound"][0];
    assert_eq!(at["mtls_mode"], "PERMISSIVE", "{x}");
    assert_eq!(
        at["connection"], "accepted over mTLS from cluster.local/ns/pay/sa/web",
        "{x}"
    );
    let authz = &at["authorization"];
    assert_eq!(authz["allowed"], false, "{x}");
    assert_eq!(authz["policy"], "pay/payment", "{x}");
    assert!(authz["rule"].is_null(), "{x}");
    let x = explain(c, "deploy/order-service", "POST", "/api/payments/1");
    let authz = &x["inbound"][0]["authorization"];
    assert_eq!(authz["allowed"], true, "{x}");
    assert_eq!(
        (&authz["policy"], &authz["rule"]),
        (&"pay/payment".into(), &0.into()),
        "{x}"
    );
    // The same explanation in words.
    let out = c.meshctl_top(&[
        "explain",
        "--from",
        "deploy/order-service",
        "-n",
        "pay",
        "-X",
        "GET",
        "payment-service:8080/api/payments/1",
    ]);
    let words = text(&out.stdout);
    assert!(
        words.contains("PeerAuthentication: PERMISSIVE")
            && words.contains("ALLOW policies apply (pay/payment) and none of their rules matches"),
        "{words}{}",
        text(&out.stderr)
    );
}

fn apply_and_wait(c: &Cluster, yaml: &str, what: &str, check: impl Fn() -> Result<(), String>) {
    c.apply(yaml);
    wait_for(what, Duration::from_secs(30), check);
}

#[test]
#[ignore = "needs root"]
fn authorization_policies_as_users_write_them() {
    needs_root();
    let c = Cluster::up("authz", &[]);
    c.apply(&client("pay", false));
    c.apply(&shop());
    for d in ["payment-service", "order-service", "web", "outsider"] {
        c.wait_ready("pay", d, 1);
    }
    let orders = "deploy/order-service";
    assert_eq!(status(&c, "deploy/web", "POST", "/api/payments/1"), "200");
    assert!(raw(&c, orders, "tcp-before").contains("ok"));

    apply_and_wait(
        &c,
        PAYMENTS,
        "the payment policy in force",
        || match status(&c, "deploy/web", "POST", "/api/payments/1").as_str() {
            "403" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    // `authz check` names the policy and what happens otherwise.
    let out = c.meshctl_top(&[
        "authz",
        "check",
        "deploy/payment-service",
        "-n",
        "pay",
        "-o",
        "json",
    ]);
    let check: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(check["policies"][0]["policy"], "pay/payment", "{check}");
    assert_eq!(check["policies"][0]["action"], "ALLOW", "{check}");
    assert!(
        check["otherwise"].as_str().unwrap().starts_with("denied"),
        "{check}"
    );
    explained_by_the_payment_policy(&c);
    let (body, code) = call(&c, orders, "POST", "/api/payments/1");
    assert_eq!((body.as_str(), code.as_str()), ("paid", "200"));
    assert_eq!(status(&c, orders, "POST", "/api/payments"), "200");
    let (body, code) = call(&c, orders, "GET", "/api/payments/1");
    assert_eq!(
        (body.as_str(), code.as_str()),
        ("RBAC: access denied", "403")
    );
    assert_eq!(status(&c, orders, "POST", "/api/refunds/1"), "403");
    assert_eq!(
        status(&c, "deploy/outsider", "POST", "/api/payments/1"),
        "403"
    );
    // On the TCP port the rule's methods and paths cannot match: an ALLOW
    // rule with HTTP-only fields allows nothing there.
    let answer = raw(&c, orders, "tcp-under-policy");
    assert!(!answer.contains("ok"), "{answer}");
    let log = text(
        &c.meshctl(&["logs", "deploy/payment-service", "-n", "pay"])
            .stdout,
    );
    assert!(
        log.contains("tcp-before") && !log.contains("tcp-under-policy"),
        "{log}"
    );
    let ip = c
        .pods()
        .into_iter()
        .find(|p| p.deployment == "payment-service")
        .and_then(|p| p.ip)
        .expect("payment-service's IP");
    let metrics = c.proxy_metrics("pay", "deploy/outsider", &ip.to_string());
    assert!(
        metrics.contains("mesh_authorization_denied_total{policy=\"pay/payment\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("response_flags=\"RBAC\""), "{metrics}");

    // Deny-all comes before the payment policy's ALLOW: the order
    // service is refused too.
    let refused = |from: &'static str| {
        let c = &c;
        move || match status(c, from, "POST", "/api/payments/1").as_str() {
            "403" => Ok(()),
            other => Err(other.to_string()),
        }
    };
    apply_and_wait(&c, DENY_ALL, "deny-all in force", refused(orders));
    let x = explain(&c, orders, "POST", "/api/payments/1");
    let authz = &x["inbound"][0]["authorization"];
    assert_eq!(
        (&authz["policy"], &authz["rule"]),
        (&"pay/deny-all".into(), &0.into()),
        "{x}"
    );
    // The refusals name their policy in `/config_dump` and the access log.
    let kept = denials(&c);
    for want in [
        "\"GET\" \"/api/payments/1\" \"rbac_access_denied_matched_policy[none]\"",
        "\"POST\" \"/api/payments/1\" \"rbac_access_denied_matched_policy[ns[pay]-policy[deny-all]-rule[0]]\"",
    ] {
        assert!(kept.iter().any(|d| d == want), "{want} not in {kept:#?}");
    }
    wait_for(
        "the refusal in the access log",
        Duration::from_secs(10),
        || {
            let log = text(
                &c.meshctl(&["logs", "deploy/payment-service", "-n", "pay", "-c", "proxy"])
                    .stdout,
            );
            log.lines()
                .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
                .find(|l| {
                    l["response_code_details"]
                        == "rbac_access_denied_matched_policy[ns[pay]-policy[deny-all]-rule[0]]"
                        && l["response_code"] == 403
                        && l["response_flags"] == "RBAC"
                        && l["upstream_cluster"] == "inbound|8080||"
                })
                .map(|_| ())
                .ok_or_else(|| "no such line".to_string())
        },
    );
    let delete = |yaml: &str| {
        let out = c.meshctl_input(&["delete", "-f", "-"], yaml);
        assert!(out.status.success(), "{}", text(&out.stderr));
    };
    delete(&format!("{PAYMENTS}---\n{DENY_ALL}"));
    // Alone, allow-nothing (`spec: {}`) refuses everything.
    apply_and_wait(
        &c,
        ALLOW_NOTHING,
        "allow-nothing in force",
        refused("deploy/web"),
    );
    assert_eq!(status(&c, orders, "POST", "/api/payments/1"), "403");

    // Without ALLOW policies, a DENY on one method refuses that method only.
    delete(ALLOW_NOTHING);
    apply_and_wait(
        &c,
        NO_DELETE,
        "the DENY on DELETE in force",
        || match status(&c, "deploy/web", "DELETE", "/api/payments/1").as_str() {
            "403" => Ok(()),
            other => Err(other.to_string()),
        },
    );
    assert_eq!(status(&c, "deploy/web", "GET", "/api/payments/1"), "200");
    // On TCP, a DENY rule with HTTP-only fields matches everything.
    let answer = raw(&c, orders, "tcp-after");
    assert!(!answer.contains("ok"), "{answer}");
}
