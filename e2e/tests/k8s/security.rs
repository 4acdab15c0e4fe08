//! Security policy on the real node: a namespace-wide STRICT
//! PeerAuthentication refuses a pod outside the mesh (through kube-proxy
//! and the server pod's redirection) and keeps meshed callers; an
//! AuthorizationPolicy that names another caller answers the meshed
//! client 403 `RBAC: access denied`. Both go again, and plaintext is
//! admitted again.

use std::time::Duration;

use e2e::k8s::{Node, ok};

use crate::step;

/// The shop's server, by its Service's name.
pub const WEB: &str = "http://web.shop.svc.cluster.local/";

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

/// What `curl` got: status, lowercased response head, body.
pub struct Answer {
    pub code: String,
    pub head: String,
    pub body: String,
}

/// `curl -i URL` with `headers` from the app container of `target` in `ns`.
pub fn curl(node: &Node, ns: &str, target: &str, url: &str, headers: &[&str]) -> Answer {
    let mut argv = vec!["curl", "-sS", "-i", "-m", "5"];
    for h in headers {
        argv.extend(["-H", h]);
    }
    argv.push(url);
    let out = node.exec(ns, target, &argv);
    let all = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
    let (head, body) = all.split_once("\n\n").unwrap_or((&all, ""));
    let code = head.split_whitespace().nth(1).unwrap_or_default();
    Answer {
        code: code.to_string(),
        head: head.to_ascii_lowercase(),
        body: if out.status.success() {
            body.to_string()
        } else {
            String::from_utf8_lossy(&out.stderr).into_owned()
        },
    }
}

/// Polls until `curl` gets `want` as status; the answer.
pub fn until_code(
    node: &Node,
    what: &str,
    (ns, target): (&str, &str),
    url: &str,
    headers: &[&str],
    want: impl Fn(&str) -> bool,
) -> Answer {
    node.wait_for(what, Duration::from_secs(60), || {
        let a = curl(node, ns, target, url, headers);
        if want(&a.code) {
            Ok(a)
        } else {
            Err(format!("{} {}", a.code, a.body))
        }
    })
}

/// The status and body `curl` gets from `ns/target` for web.
fn get(node: &Node, ns: &str, target: &str) -> (String, String) {
    let a = curl(node, ns, target, WEB, &[]);
    (a.code, a.body)
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
    explained(node);
    viz_views(node);
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

/// `meshctl edges` and `stat` through port-forwards to every meshed
/// pod's metrics: the client's requests reached web over mTLS, the
/// plaintext pod's without.
fn viz_views(node: &Node) {
    let out = ok(
        node.meshctl(&["edges", "deploy", "-n", "shop", "-o", "json"]),
        "meshctl edges",
    );
    let edges: serde_json::Value = serde_json::from_str(&out).unwrap();
    let edges = edges.as_array().expect("edges");
    let to_web = |src: &str| {
        edges
            .iter()
            .filter(|e| e["src"] == src && e["dst"].as_str().is_some_and(|d| d.starts_with("web-")))
            .collect::<Vec<_>>()
    };
    let meshed = to_web("client");
    assert!(!meshed.is_empty(), "no client -> web edge: {edges:?}");
    for e in meshed {
        assert_eq!(e["secured"], true, "{e}");
        assert_eq!(
            e["server_id"], "spiffe://cluster.local/ns/shop/sa/web",
            "{e}"
        );
    }
    assert!(
        to_web("unknown").iter().any(|e| e["secured"] == false),
        "no plaintext edge from outside the mesh: {edges:?}"
    );
    let out = ok(
        node.meshctl(&[
            "stat", "deploy", "-n", "shop", "--window", "2s", "-o", "json",
        ]),
        "meshctl stat",
    );
    let rows: serde_json::Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = rows
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(
        names.contains(&"web-v1") && names.contains(&"client"),
        "stat rows: {rows}"
    );
    // tap, through a port-forward to each web pod's admin port, while the
    // client's requests are refused by the policy.
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for _ in 0..40 {
                if done.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let _ = get(node, "shop", "deploy/client");
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let out = node.meshctl(&[
            "tap",
            "deploy/web-v1",
            "-n",
            "shop",
            "--direction",
            "inbound",
            "--max",
            "1",
            "--duration",
            "20s",
            "-o",
            "json",
        ]);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let out = ok(out, "meshctl tap");
        let e: serde_json::Value =
            serde_json::from_str(out.lines().next().expect("a tapped request")).unwrap();
        assert_eq!(e["source"], "client", "{e}");
        assert_eq!(e["destination"], "web-v1", "{e}");
        assert_eq!(e["status"], 403, "{e}");
        assert_eq!(e["tls"], true, "{e}");
    });
}

/// `meshctl explain` through port-forwards names the route's endpoints,
/// the mode at web and the policy that refuses the client.
fn explained(node: &Node) {
    let out = ok(
        node.meshctl(&[
            "explain",
            "--from",
            "deploy/client",
            "-n",
            "shop",
            WEB,
            "-o",
            "json",
        ]),
        "meshctl explain",
    );
    let x: serde_json::Value = serde_json::from_str(&out).unwrap();
    // The canary's split may still hold: one subset per version.
    let destinations = x["outbound"]["route"]["destinations"]
        .as_array()
        .expect("destinations");
    let mut endpoints = vec![];
    for d in destinations {
        assert_eq!(d["host"], "web.shop.svc.cluster.local", "{x}");
        endpoints.extend(d["endpoints"].as_array().expect("endpoints"));
    }
    assert_eq!(endpoints.len(), 2, "web-v1 and web-v2: {x}");
    for ep in endpoints {
        assert_eq!(
            ep["identity"], "spiffe://cluster.local/ns/shop/sa/web",
            "{x}"
        );
    }
    let inbound = x["inbound"].as_array().expect("inbound");
    assert_eq!(inbound.len(), 2, "{x}");
    for at in inbound {
        assert_eq!(at["mtls_mode"], "STRICT", "{x}");
        let authz = &at["authorization"];
        assert_eq!(authz["allowed"], false, "{x}");
        assert_eq!(authz["policy"], "shop/web-callers", "{x}");
        assert!(authz["rule"].is_null(), "{x}");
    }
}
