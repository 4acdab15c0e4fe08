//! Opaque traffic: tcp routes by weight and tls routes by SNI.

use std::time::Duration;

use e2e::{Cluster, client, needs_root, text, versioned_on};

use super::*;

const OPAQUE: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: echo, namespace: l4}
spec:
  host: echo
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: echo, namespace: l4}
spec:
  hosts: [echo]
  tcp:
  - match: [{port: 9000}]
    route:
    - destination: {host: echo, subset: v1}
      weight: 80
    - destination: {host: echo, subset: v2}
      weight: 20
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: secure, namespace: l4}
spec:
  host: secure
  subsets:
  - {name: a, labels: {version: a}}
  - {name: b, labels: {version: b}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: secure, namespace: l4}
spec:
  hosts: [secure]
  tls:
  - match: [{port: 8443, sniHosts: [a.example.com]}]
    route: [{destination: {host: secure, subset: a}}]
  - match: [{port: 8443, sniHosts: ['*.example.org']}]
    route: [{destination: {host: secure, subset: b}}]
"#;

#[test]
#[ignore = "needs root"]
fn tcp_routes_split_and_tls_routes_follow_sni() {
    needs_root();
    let c = Cluster::up("opaque", &[]);
    let dir = c.state.join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = std::process::Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args(["-subj", "/CN=secure", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tls_env = format!("TLS_CERT={},TLS_KEY={}", cert.display(), key.display());
    c.apply(&client("l4", true));
    c.apply(&versioned_on(
        "l4",
        "echo",
        "tcp",
        9000,
        &[("v1", 1, ""), ("v2", 1, "")],
    ));
    c.apply(&versioned_on(
        "l4",
        "secure",
        "tls",
        8443,
        &[("a", 1, &tls_env), ("b", 1, &tls_env)],
    ));
    for d in ["client", "echo-v1", "echo-v2", "secure-a", "secure-b"] {
        c.wait_ready("l4", d, 1);
    }
    c.apply(OPAQUE);
    let sni = |name: &str| {
        curl(
            &c,
            "l4",
            &[
                "-k",
                "--connect-to",
                &format!("{name}:8443:secure:8443"),
                &format!("https://{name}:8443/"),
            ],
        )
    };
    until("the tls routes", Duration::from_secs(5), || {
        sni("a.example.com").starts_with("pod=secure-a")
    });
    for _ in 0..5 {
        assert!(sni("a.example.com").starts_with("pod=secure-a"));
        assert!(sni("api.example.org").starts_with("pod=secure-b"));
    }
    let out = c.exec(
        "l4",
        "deploy/client",
        &[
            "curl",
            "-sk",
            "--max-time",
            "5",
            "--connect-to",
            "other.example.net:8443:secure:8443",
            "https://other.example.net:8443/",
        ],
    );
    assert!(!out.status.success(), "an SNI no route takes got through");

    // TCP, 80/20 by connection: each curl is its own connection.
    let script = "for i in $(seq 300); do curl -s --max-time 10 http://echo:9000/; done";
    let out = c.exec_ok("l4", "deploy/client", &["sh", "-c", script]);
    let (v1, v2) = (count(&out, "echo-v1"), count(&out, "echo-v2"));
    assert_eq!(v1 + v2, 300, "{out}");
    assert!((33..=90).contains(&v2), "v2 got {v2} of 300 connections");
}
