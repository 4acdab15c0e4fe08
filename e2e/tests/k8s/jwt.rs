//! RequestAuthentication on the real node: the controller, in its pod,
//! fetches the issuer's JWKS from a Service of the cluster; web's proxy
//! refuses bad tokens with 401 and the reason; the JWT policy users copy
//! (`requestPrincipals` and `request.auth.claims[role]`) decides.

use std::collections::BTreeMap;
use std::time::Duration;

use e2e::k8s::{Node, ok};

use crate::security::{WEB, curl, until_code};
use crate::step;

const ISSUER: &str = "https://auth.shop.example";

/// The JWKS, served by busybox httpd outside the mesh.
const JWKS_SERVER: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: jwks, namespace: plain}
spec:
  selector: {app: jwks}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: jwks, namespace: plain}
spec:
  selector: {matchLabels: {app: jwks}}
  template:
    metadata: {labels: {app: jwks}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: local/tools:1
        imagePullPolicy: Never
        command: ["httpd", "-f", "-p", "8080", "-h", "/srv"]
        volumeMounts: [{name: jwks, mountPath: /srv}]
      volumes:
      - name: jwks
        configMap: {name: jwks}
"#;

const REQUEST_AUTHENTICATION: &str = r#"
apiVersion: security.istio.io/v1
kind: RequestAuthentication
metadata: {name: web-jwt, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  jwtRules:
  - issuer: "https://auth.shop.example"
    jwksUri: "http://jwks.plain.svc.cluster.local/jwks.json"
    audiences: [web]
"#;

const REQUIRE_ADMIN: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: require-admin, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: ALLOW
  rules:
  - from: [{source: {requestPrincipals: ["https://auth.shop.example/*"]}}]
    when: [{key: "request.auth.claims[role]", values: ["admin"]}]
"#;

/// PyJWT's keys and tokens, made on the host: (JWKS, name -> token).
fn tokens() -> (String, BTreeMap<String, String>) {
    let dir = std::env::temp_dir().join(format!("mesh-k8s-jwt-{}", std::process::id()));
    let out = std::process::Command::new("/usr/bin/python3")
        .arg(e2e::server("jwt_tokens.py"))
        .arg(&dir)
        .args([ISSUER, "web"])
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "PyJWT: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jwks = std::fs::read_to_string(dir.join("jwks.json")).unwrap();
    let tokens = serde_json::from_slice(&std::fs::read(dir.join("tokens.json")).unwrap()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    (jwks, tokens)
}

pub fn tokens_and_claims(node: &Node) {
    step("RequestAuthentication: a jwksUri in the cluster, bad tokens 401, claims decide");
    let (jwks, tokens) = tokens();
    let cm = ok(
        node.kubectl(&[
            "create",
            "configmap",
            "jwks",
            "-n",
            "plain",
            &format!("--from-literal=jwks.json={jwks}"),
            "--dry-run=client",
            "-o",
            "yaml",
        ]),
        "the JWKS ConfigMap",
    );
    ok(
        node.apply(&format!("{cm}---{JWKS_SERVER}")),
        "apply the JWKS server",
    );
    node.rollout("plain", "jwks", 120);
    ok(
        node.apply(REQUEST_AUTHENTICATION),
        "apply RequestAuthentication",
    );

    let bearer = |name: &str| format!("Authorization: Bearer {}", tokens[name]);
    let web = ("shop", "deploy/client");
    // Until the controller has fetched the JWKS and both web pods hold
    // its keys, a token is refused for the fetch instead. An expired
    // token is judged before its keys are needed, so wait for six
    // answers in a row that need the keys: a good token let through.
    node.wait_for(
        "both web pods judging tokens with the fetched keys",
        Duration::from_secs(60),
        || {
            for _ in 0..6 {
                let a = curl(node, web.0, web.1, WEB, &[&bearer("rs256")]);
                if a.code != "200" {
                    return Err(format!("{} {}", a.code, a.body));
                }
            }
            Ok(())
        },
    );
    for (name, reason) in [
        ("expired", "Jwt is expired"),
        ("wrong_key", "Jwt verification fails"),
        ("none", "Jwt algorithm is not supported"),
        ("wrong_audience", "Audiences in Jwt are not allowed"),
    ] {
        let a = curl(node, web.0, web.1, WEB, &[&bearer(name)]);
        assert_eq!(
            (a.code.as_str(), a.body.as_str()),
            ("401", reason),
            "{name}"
        );
    }
    for alg in ["rs256", "es256", "eddsa"] {
        let a = curl(node, web.0, web.1, WEB, &[&bearer(alg)]);
        assert_eq!(a.code, "200", "{alg}: {}", a.body);
    }
    assert_eq!(
        curl(node, web.0, web.1, WEB, &[]).code,
        "200",
        "no token passes"
    );

    ok(node.apply(REQUIRE_ADMIN), "apply the JWT policy");
    until_code(node, "no token denied", web, WEB, &[], |c| c == "403");
    let user = curl(node, web.0, web.1, WEB, &[&bearer("user")]);
    assert_eq!(
        (user.code.as_str(), user.body.as_str()),
        ("403", "RBAC: access denied")
    );
    assert_eq!(
        curl(node, web.0, web.1, WEB, &[&bearer("ps256")]).code,
        "200",
        "role admin"
    );

    ok(
        node.kubectl(&[
            "delete",
            "-n",
            "shop",
            "requestauthentication/web-jwt",
            "authorizationpolicy/require-admin",
        ]),
        "delete the JWT policies",
    );
    until_code(node, "no token allowed again", web, WEB, &[], |c| {
        c == "200"
    });
    ok(
        node.kubectl(&[
            "delete",
            "-n",
            "plain",
            "deploy/jwks",
            "service/jwks",
            "configmap/jwks",
        ]),
        "delete the JWKS server",
    );
}
