//! DestinationRule TLS origination on the real node: a client sends
//! plain HTTP to a Service outside the mesh whose pod speaks only TLS
//! (openssl `s_server`, requiring a client certificate); its proxy
//! originates MUTUAL TLS with the files the pod mounts by Istio's
//! `sidecar.istio.io/userVolume` annotations, and SIMPLE is refused by
//! the server for want of a client certificate.

use e2e::k8s::{Node, ok};

use crate::security::{curl, until_code};
use crate::step;

const URL: &str = "http://secure.plain.svc.cluster.local/";

const SERVER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: secure, namespace: plain}
spec:
  selector: {app: secure}
  ports: [{name: http, port: 80, targetPort: 8443}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: secure, namespace: plain}
spec:
  selector: {matchLabels: {app: secure}}
  template:
    metadata: {labels: {app: secure}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: local/tools:1
        imagePullPolicy: Never
        command: ["openssl", "s_server", "-quiet", "-accept", "8443", "-www", "-Verify", "1",
                  "-cert", "/certs/server.pem", "-key", "/certs/server-key.pem", "-CAfile", "/certs/ca.pem"]
        volumeMounts: [{name: certs, mountPath: /certs}]
      volumes:
      - name: certs
        secret: {secretName: secure-server}
"#;

/// A meshed client whose proxy mounts the client certificate.
const CLIENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: tls-client, namespace: shop}
spec:
  selector: {matchLabels: {app: tls-client}}
  template:
    metadata:
      labels: {app: tls-client}
      annotations:
        sidecar.istio.io/userVolume: '[{"name":"client-credential","secret":{"secretName":"client-credential"}}]'
        sidecar.istio.io/userVolumeMount: '[{"name":"client-credential","mountPath":"/etc/client-credential","readonly":true}]'
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: local/tools:1
        imagePullPolicy: Never
        command: ["sleep", "100000"]
"#;

fn destination_rule(mode: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure, namespace: shop}}
spec:
  host: secure.plain.svc.cluster.local
  trafficPolicy:
    tls:
      mode: {mode}
      caCertificates: /etc/client-credential/ca.pem
      clientCertificate: /etc/client-credential/client.pem
      privateKey: /etc/client-credential/client-key.pem
      sni: secure.example.com
"#
    )
}

/// `kubectl create secret generic NAME --from-file=...` of `files` in `dir`.
fn secret(node: &Node, ns: &str, name: &str, dir: &std::path::Path, files: &[&str]) {
    let mut args = vec![
        "create".to_string(),
        "secret".into(),
        "generic".into(),
        name.into(),
        "-n".into(),
        ns.into(),
    ];
    for f in files {
        args.push(format!("--from-file={f}={}", dir.join(f).display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    ok(node.kubectl(&args), &format!("secret {ns}/{name}"));
}

pub fn origination(node: &Node) {
    step("DestinationRule TLS: MUTUAL origination with mounted files; SIMPLE refused");
    let dir = std::env::temp_dir().join(format!("mesh-k8s-tls-{}", std::process::id()));
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(e2e::server("tls_server.py"))
        .arg("gen")
        .arg(&dir)
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    secret(
        node,
        "plain",
        "secure-server",
        &dir,
        &["server.pem", "server-key.pem", "ca.pem"],
    );
    secret(
        node,
        "shop",
        "client-credential",
        &dir,
        &["client.pem", "client-key.pem", "ca.pem"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
    ok(node.apply(SERVER), "apply the TLS server");
    ok(node.apply(CLIENT), "apply the client");
    node.rollout("plain", "secure", 120);
    node.rollout("shop", "tls-client", 180);

    let client = ("shop", "deploy/tls-client");
    let plain = curl(node, client.0, client.1, URL, &[]);
    assert_ne!(plain.code, "200", "plaintext to a TLS port: {}", plain.body);

    ok(node.apply(&destination_rule("MUTUAL")), "apply MUTUAL");
    let a = until_code(node, "MUTUAL origination", client, URL, &[], |c| c == "200");
    assert!(a.body.contains("Cipher is TLS_"), "{}", a.body);
    assert!(
        a.body.contains("Client certificate") && a.body.contains("CN=mesh-client"),
        "the server saw the client certificate: {}",
        a.body
    );

    ok(node.apply(&destination_rule("SIMPLE")), "apply SIMPLE");
    until_code(
        node,
        "SIMPLE, no client certificate, refused",
        client,
        URL,
        &[],
        |c| c == "503",
    );

    ok(
        node.kubectl(&[
            "delete",
            "-n",
            "shop",
            "destinationrule/secure",
            "deploy/tls-client",
            "secret/client-credential",
        ]),
        "delete the client",
    );
    ok(
        node.kubectl(&[
            "delete",
            "-n",
            "plain",
            "deploy/secure",
            "service/secure",
            "secret/secure-server",
        ]),
        "delete the TLS server",
    );
}
