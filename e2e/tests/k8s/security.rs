//! Security policy on the real node: a namespace-wide STRICT
//! PeerAuthentication refuses a pod outside the mesh (through kube-proxy
//! and the server pod's redirection) and keeps meshed callers; an
//! AuthorizationPolicy that names another caller answers the meshed
//! client 403 `RBAC: access denied`. Both go again, and plaintext is
//! admitted again.

use std::time::Duration;

use e2e::k8s::{Node, ok};

use crate::step;

const STRICT: &str = "apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: default, namespace: shop}
spec: {mtls: {mode: STRICT}}
";

const ONLY_NOBODY: &str = r#"apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: web-callers, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  rules: [{from: [{source: {principals: ["cluster.local/ns/shop/sa/nobody"]}}]}]
"#;

/// The status and body `curl` gets from `ns/target` for web.
fn get(node: &Node, ns: &str, target: &str) -> (String, String) {
    let out = node.exec(
        ns,
        target,
        &[
            "curl",
            "-s",
            "-m",
            "5",
            "-w",
            "\n%{http_code}",
            "http://web.shop.svc.cluster.local/",
        ],
    );
    let all = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", &all));
    (code.to_string(), body.to_string())
}

fn until(node: &Node, what: &str, ns: &str, target: &str, want: impl Fn(&str, &str) -> bool) {
    node.wait_for(what, Duration::from_secs(60), || {
        let (code, body) = get(node, ns, target);
        if want(&code, &body) {
            Ok(())
        } else {
            Err(format!("{code} {body}"))
        }
    });
}

pub fn policies(node: &Node) {
    step("STRICT refuses a pod outside the mesh; an AuthorizationPolicy answers 403");
    until(
        node,
        "plaintext admitted (PERMISSIVE)",
        "plain",
        "bare",
        |c, _| c == "200",
    );
    ok(node.apply(STRICT), "apply STRICT");
    until(
        node,
        "plaintext refused under STRICT",
        "plain",
        "bare",
        |c, _| c != "200",
    );
    assert_eq!(
        get(node, "shop", "deploy/client").0,
        "200",
        "the meshed client was refused"
    );
    ok(node.apply(ONLY_NOBODY), "apply the AuthorizationPolicy");
    until(
        node,
        "the client refused by the policy",
        "shop",
        "deploy/client",
        |c, b| c == "403" && b == "RBAC: access denied",
    );
    ok(
        node.kubectl(&[
            "delete",
            "-n",
            "shop",
            "authorizationpolicy/web-callers",
            "peerauthentication/default",
        ]),
        "delete the policies",
    );
    until(node, "plaintext admitted again", "plain", "bare", |c, _| {
        c == "200"
    });
    until(
        node,
        "the client allowed again",
        "shop",
        "deploy/client",
        |c, _| c == "200",
    );
}
