//! DestinationRule `trafficPolicy.tls`: TLS originated by the sidecar to
//! an HTTPS server outside the mesh (SIMPLE with caCertificates, sni and
//! subjectAltNames; MUTUAL with a client certificate), each wrong trust
//! refused; and inside the mesh, DISABLE sends plaintext (which STRICT
//! refuses) while ISTIO_MUTUAL keeps mTLS. The app always speaks plain
//! HTTP to port 18080 of `secure.example.com`.

use std::process::Command;
use std::time::Duration;

use e2e::{Cluster, Killed, client, needs_root, server, text, versioned, wait_for};

/// The HTTPS servers' host: plain HTTP ports for the app, TLS ports on
/// the server.
const ENTRY: &str = r#"
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: secure, namespace: tls}
spec:
  hosts: [secure.example.com]
  addresses: [10.244.0.1]
  ports:
  - {number: 18080, name: http, protocol: HTTP, targetPort: 18443}
  - {number: 18081, name: http-mutual, protocol: HTTP, targetPort: 18444}
  location: MESH_EXTERNAL
  resolution: NONE
"#;

/// The DestinationRule with `simple` as port 18080's tls and MUTUAL with
/// the client certificate on port 18081 (`mutual`: its tls).
fn rule(simple: &str, mutual: &str) -> String {
    format!(
        r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: secure, namespace: tls}}
spec:
  host: secure.example.com
  trafficPolicy:
    portLevelSettings:
    - port: {{number: 18080}}
      tls: {simple}
    - port: {{number: 18081}}
      tls: {mutual}
"#
    )
}

/// `curl` from the client to `port` of secure.example.com: status and body.
fn get(c: &Cluster, port: u16) -> (String, String) {
    let url = format!("http://secure.example.com:{port}/x");
    let resolve = format!("secure.example.com:{port}:10.244.0.1");
    let out = c.exec(
        "tls",
        "deploy/client",
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "--resolve",
            &resolve,
            "-w",
            "\n%{http_code}",
            &url,
        ],
    );
    let all = text(&out.stdout);
    let (body, code) = all.rsplit_once('\n').unwrap_or(("", &all));
    (code.to_string(), body.to_string())
}

fn until_status(c: &Cluster, what: &str, port: u16, want: &str) -> String {
    wait_for(what, Duration::from_secs(15), || {
        let (code, body) = get(c, port);
        if code == want {
            Ok(body)
        } else {
            Err(format!("{code} {body}"))
        }
    })
}

#[test]
#[ignore = "needs root"]
fn destination_rule_tls_originates_disables_and_keeps_mesh_mtls() {
    needs_root();
    let c = Cluster::up("dr-tls", &[]);
    c.apply(&client("tls", true));
    c.apply(&versioned("tls", "web", 8080, &[("v1", 1, "")]));
    c.wait_ready("tls", "client", 1);
    c.wait_ready("tls", "web-v1", 1);
    let dir = c.state.join("tls-files");
    let d = dir.display().to_string();
    let made = Command::new("/usr/bin/python3")
        .arg(server("tls_server.py"))
        .args(["gen", &d])
        .output()
        .unwrap();
    assert!(made.status.success(), "{}", text(&made.stderr));
    let serve = |port: &str, extra: &[&str]| {
        Killed(
            Command::new("ip")
                .args(["netns", "exec", &c.node_ns(), "/usr/bin/python3"])
                .arg(server("tls_server.py"))
                .args(["serve", port, &d])
                .args(extra)
                .spawn()
                .unwrap(),
        )
    };
    let _simple = serve("18443", &[]);
    let _mutual = serve("18444", &["--mutual"]);

    let ca = format!("{d}/ca.pem");
    let good = format!("{{mode: SIMPLE, caCertificates: {ca}, sni: secure.example.com}}");
    let mutual = format!(
        "{{mode: MUTUAL, caCertificates: {ca}, clientCertificate: {d}/client.pem, privateKey: {d}/client-key.pem}}"
    );
    c.apply(&format!("{ENTRY}---{}", rule(&good, &mutual)));
    let body = until_status(&c, "TLS origination", 18080, "200");
    assert!(
        body.starts_with("tls-ok sni=secure.example.com client=none path=/x"),
        "{body}"
    );
    let body = until_status(&c, "mutual TLS origination", 18081, "200");
    assert!(body.contains("client=mesh-client"), "{body}");
    let out = c.meshctl_top(&["proxy-config", "clusters", "deploy/client", "-n", "tls"]);
    let clusters = text(&out.stdout);
    assert!(
        clusters.lines().any(|l| l.starts_with("secure.example.com")
            && l.contains("18081")
            && l.ends_with("MUTUAL")),
        "{clusters}{}",
        text(&out.stderr)
    );

    // The server's certificate is checked: another CA, a name it does not
    // carry, and a MUTUAL server without the client certificate fail.
    let other = format!("{{mode: SIMPLE, caCertificates: {d}/other-ca.pem}}");
    let simple_to_mutual = format!("{{mode: SIMPLE, caCertificates: {ca}}}");
    c.apply(&rule(&other, &simple_to_mutual));
    until_status(&c, "a server of another CA refused", 18080, "503");
    until_status(&c, "no client certificate refused", 18081, "503");
    let wrong_san =
        format!("{{mode: SIMPLE, caCertificates: {ca}, subjectAltNames: [api.example.com]}}");
    let right_san = format!(
        "{{mode: SIMPLE, caCertificates: {ca}, sni: other.example.com, subjectAltNames: [nope.example.com, secure.example.com]}}"
    );
    c.apply(&rule(&wrong_san, &mutual));
    until_status(&c, "a name outside subjectAltNames refused", 18080, "503");
    c.apply(&rule(&right_san, &mutual));
    let body = until_status(&c, "a listed subjectAltName accepted", 18080, "200");
    assert!(body.contains("sni=other.example.com"), "{body}");
    // A file the proxy cannot read fails this destination only.
    let missing = format!("{{mode: SIMPLE, caCertificates: {d}/missing.pem}}");
    c.apply(&rule(&missing, &mutual));
    until_status(&c, "an unreadable caCertificates", 18080, "503");
    assert_eq!(get(&c, 18081).0, "200");

    // Inside the mesh: DISABLE sends plaintext, which STRICT refuses;
    // ISTIO_MUTUAL keeps mTLS.
    let web = |mode: &str| {
        format!(
            "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: web, namespace: tls}}\nspec:\n  host: web\n  trafficPolicy: {{tls: {{mode: {mode}}}}}\n"
        )
    };
    let web_status = || {
        text(
            &c.exec(
                "tls",
                "deploy/client",
                &[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "5",
                    "http://web:8080/",
                ],
            )
            .stdout,
        )
    };
    c.apply("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: tls}\nspec: {mtls: {mode: STRICT}}\n");
    c.apply(&web("DISABLE"));
    wait_for(
        "DISABLE refused by STRICT",
        Duration::from_secs(15),
        || match web_status().as_str() {
            "200" => Err("200".to_string()),
            other => Ok(other.to_string()),
        },
    );
    c.apply(&web("ISTIO_MUTUAL"));
    wait_for(
        "ISTIO_MUTUAL under STRICT",
        Duration::from_secs(15),
        || match web_status().as_str() {
            "200" => Ok(()),
            other => Err(other.to_string()),
        },
    );
}
