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
