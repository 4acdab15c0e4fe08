//! RequestAuthentication with tokens made by PyJWT: the controller
//! fetches the issuer's JWKS from a `jwksUri` served by a pod of the
//! run, proxies check RS256, PS256, ES256 and EdDSA tokens and refuse
//! every bad one with 401 and its reason, the JWT policy users copy
//! (`requestPrincipals` and `request.auth.claims[role]`) decides on the
//! claims, and a key rotated in the JWKS is taken without a restart.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use e2e::{Cluster, client, http_and_tcp_app, needs_root, text, wait_for};

const NS: &str = "jwt";
const ISSUER: &str = "https://auth.shop.example";

/// The JWKS server: unmeshed, serving `dir` over HTTP on 8000.
fn jwks_server(dir: &Path) -> String {
    format!(
        r#"
apiVersion: apps/v1
kind: Deployment
metadata: {{name: jwks, namespace: {NS}}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: jwks}}}}
  template:
    metadata:
      labels: {{app: jwks}}
      annotations: {{sidecar.istio.io/inject: "false"}}
    spec:
      containers:
      - name: main
        command: [python3, -m, http.server, "8000", --bind, 0.0.0.0, --directory, "{}"]
"#,
        dir.display()
    )
}

fn request_authentication(jwks_uri: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {{name: jwt, namespace: {NS}}}
spec:
  selector:
    matchLabels: {{app: payment-service}}
  jwtRules:
  - issuer: "{ISSUER}"
    jwksUri: "{jwks_uri}"
    audiences: [payments]
    outputClaimToHeaders:
    - {{header: x-jwt-role, claim: role}}
    - {{header: x-jwt-team, claim: team.name}}
"#
    )
}

/// The JWT policy of Istio's documentation, with a claim condition.
const REQUIRE_ADMIN: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-admin, namespace: jwt}
spec:
  selector:
    matchLabels: {app: payment-service}
  action: ALLOW
  rules:
  - from:
    - source:
        requestPrincipals: ["https://auth.shop.example/*"]
    when:
    - key: request.auth.claims[role]
      values: ["admin"]
"#;

/// `curl` from the meshed client to `path` with `headers`: (body, status).
fn get(c: &Cluster, path: &str, headers: &[String]) -> (String, String) {
    let url = format!("http://payment-service:8080{path}");
    let mut argv = vec!["curl", "-sS", "--max-time", "5", "-w", "\n%{http_code}"];
    for h in headers {
        argv.extend(["-H", h.as_str()]);
    }
    argv.push(&url);
    let out = c.exec(NS, "deploy/client", &argv);
    let all = text(&out.stdout);
    match all.rsplit_once('\n') {
        Some((body, code)) => (body.to_string(), code.to_string()),
        None => (text(&out.stderr), all),
    }
}

fn bearer(token: &str) -> Vec<String> {
    vec![format!("Authorization: Bearer {token}")]
}

fn expect(c: &Cluster, path: &str, headers: &[String], want: &str) -> Result<String, String> {
    let (body, code) = get(c, path, headers);
    if code == want {
        Ok(body)
    } else {
        Err(format!("status {code}, body {body:?}"))
    }
}

#[test]
#[ignore = "needs root"]
fn jwts_are_checked_against_the_fetched_jwks_and_claims_decide() {
    needs_root();
    let c = Cluster::up("jwt", &["--jwks-refresh-interval=2s"]);
    let dir = c.state.join("jwks");
    let script = e2e::server("jwt_tokens.py");
    let out = std::process::Command::new("/usr/bin/python3")
        .args([
            script.as_str(),
            &dir.display().to_string(),
            ISSUER,
            "payments",
        ])
        .output()
        .expect("python3");
    assert!(out.status.success(), "PyJWT: {}", text(&out.stderr));
    let tokens: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(dir.join("tokens.json")).unwrap()).unwrap();
    let token = |name: &str| tokens[name].clone();

    c.apply(&format!(
        "{}---{}---{}",
        client(NS, true),
        http_and_tcp_app(NS, "payment-service"),
        jwks_server(&dir)
    ));
    c.wait_ready(NS, "client", 1);
    c.wait_ready(NS, "payment-service", 1);
    let jwks_ip = c.wait_ready(NS, "jwks", 1)[0].ip.expect("jwks pod IP");
    c.apply(&request_authentication(&format!(
        "http://{jwks_ip}:8000/jwks.json"
    )));

    // A valid token of each algorithm passes; the token is not forwarded,
    // the claims are, and a client's own claim header is dropped.
    let spoof = "x-jwt-role: root".to_string();
    for alg in ["rs256", "ps256", "es256", "eddsa"] {
        let mut headers = bearer(&token(alg));
        headers.push(spoof.clone());
        let body = wait_for(alg, Duration::from_secs(30), || {
            expect(&c, "/headers", &headers, "200")
        });
        assert!(body.contains("x-jwt-role: admin"), "{alg}: {body}");
        assert!(body.contains("x-jwt-team: payments"), "{alg}: {body}");
        assert!(!body.contains("x-jwt-role: root"), "{alg}: {body}");
        assert!(!body.contains("authorization:"), "{alg}: {body}");
    }
    let body =
        expect(&c, "/headers", std::slice::from_ref(&spoof), "200").expect("no token passes");
    assert!(!body.contains("x-jwt-role"), "{body}");
    let q = format!("/pay?access_token={}", token("es256"));
    expect(&c, &q, &[], "200").expect("the access_token parameter");

    // Every bad token: 401 with the reason.
    for (name, reason) in [
        ("wrong_key", "Jwt verification fails"),
        ("none", "Jwt algorithm is not supported"),
        ("hs256_confusion", "Jwt algorithm is not supported"),
        ("expired", "Jwt is expired"),
        ("not_yet_valid", "Jwt not yet valid"),
        ("wrong_audience", "Audiences in Jwt are not allowed"),
        ("wrong_issuer", "Jwt issuer is not configured"),
        (
            "unknown_kid",
            "Jwks doesn't have key to match kid or alg from Jwt",
        ),
    ] {
        let body =
            expect(&c, "/", &bearer(&token(name)), "401").unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(body, reason, "{name}");
    }
    let pod_ip = c.wait_ready(NS, "payment-service", 1)[0].ip.unwrap();
    let metrics = c.proxy_metrics(NS, "deploy/client", &pod_ip.to_string());
    assert!(
        metrics.contains("mesh_jwt_refused_total{reason=\"expired\"} 1"),
        "{metrics}"
    );

    explained(&c, &token("expired"), "refused: 401 Jwt is expired");
    explained(
        &c,
        &token("rs256"),
        "valid token: request principal https://auth.shop.example/alice",
    );

    // The policy users copy: a principal of the issuer with role admin.
    c.apply(REQUIRE_ADMIN);
    wait_for("no token denied", Duration::from_secs(30), || {
        expect(&c, "/", &[], "403")
    });
    expect(&c, "/", &bearer(&token("user")), "403").expect("role user");
    expect(&c, "/", &bearer(&token("rs256")), "200").expect("role admin");
    expect(&c, "/", &bearer(&token("expired")), "401").expect("authentication first");

    // Rotation: the JWKS now holds only rsa-2; the controller takes it
    // within its refresh, with no restart.
    expect(&c, "/", &bearer(&token("rotated")), "401").expect("rsa-2 unknown yet");
    std::fs::copy(dir.join("jwks-rotated.json"), dir.join("jwks.json")).unwrap();
    wait_for("the rotated key", Duration::from_secs(30), || {
        expect(&c, "/", &bearer(&token("rotated")), "200")
    });
    let body = expect(&c, "/", &bearer(&token("rs256")), "401").expect("rsa-1 retired");
    assert_eq!(body, "Jwks doesn't have key to match kid or alg from Jwt");
}

/// `meshctl explain` of a request with `token` says `verdict` of it.
fn explained(c: &Cluster, token: &str, verdict: &str) {
    let auth = format!("Authorization: Bearer {token}");
    let out = c.meshctl_top(&[
        "explain",
        "--from",
        "deploy/client",
        "-n",
        NS,
        "-H",
        &auth,
        "payment-service:8080/",
        "-o",
        "json",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let x: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(x["inbound"][0]["authentication"], verdict, "{x}");
}
