//! A CUSTOM AuthorizationPolicy with an HTTP external authorizer declared
//! in the mesh configuration (the ConfigMap `istio`), as Istio's
//! documentation sets it up: the authorizer, a meshed server of its own,
//! allows or denies; its headers go where the provider says; a provider
//! that cannot be reached denies, or allows with `failOpen`.

use std::time::Duration;

use e2e::{Cluster, app, client, http_and_tcp_app, needs_root, server, text, wait_for};

const NS: &str = "extauthz";

/// The mesh configuration with the provider at Service `service`.
fn mesh_config(service: &str, fail_open: bool) -> String {
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: istio-system}}
---
apiVersion: v1
kind: ConfigMap
metadata: {{name: istio, namespace: istio-system}}
data:
  mesh: |-
    accessLogFile: /dev/stdout
    extensionProviders:
    - name: sample-ext-authz-http
      envoyExtAuthzHttp:
        service: {service}.{NS}.svc.cluster.local
        port: "8000"
        pathPrefix: /check
        failOpen: {fail_open}
        includeRequestHeadersInCheck: ["x-ext-authz"]
        headersToUpstreamOnAllow: ["x-ext-authz-check-result"]
        headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
"#
    )
}

fn policy(provider: &str) -> String {
    format!(
        r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: ext-authz, namespace: {NS}}}
spec:
  selector:
    matchLabels: {{app: payment-service}}
  action: CUSTOM
  provider:
    name: {provider}
  rules:
  - to:
    - operation:
        paths: ["/headers"]
"#
    )
}

/// `curl -i` from the meshed client: (status, response head, body).
fn get(c: &Cluster, path: &str, headers: &[&str]) -> (String, String, String) {
    let url = format!("http://payment-service:8080{path}");
    let mut argv = vec!["curl", "-sS", "-i", "--max-time", "5"];
    for h in headers {
        argv.extend(["-H", h]);
    }
    argv.push(&url);
    let out = text(&c.exec(NS, "deploy/client", &argv).stdout).replace("\r\n", "\n");
    let (head, body) = out.split_once("\n\n").unwrap_or((&out, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .unwrap_or_default()
        .to_string();
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn status_is(
    c: &Cluster,
    path: &str,
    headers: &[&str],
    want: &str,
) -> Result<(String, String), String> {
    let (status, head, body) = get(c, path, headers);
    if status == want {
        Ok((head, body))
    } else {
        Err(format!("{status}: {head} {body}"))
    }
}

#[test]
#[ignore = "needs root"]
fn custom_policies_ask_the_external_authorizer_of_the_mesh_config() {
    needs_root();
    let c = Cluster::up("extauthz", &[]);
    let authorizer = app(
        NS,
        "ext-authz",
        1,
        8000,
        &["python3", &server("ext_authz.py"), "8000"],
        "",
    );
    c.apply(&format!(
        "{}---{}---{authorizer}",
        client(NS, true),
        http_and_tcp_app(NS, "payment-service"),
    ));
    for d in ["client", "payment-service", "ext-authz"] {
        c.wait_ready(NS, d, 1);
    }
    let out = c.meshctl_input(&["apply", "-f", "-"], &mesh_config("ext-authz", false));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("data.mesh.accessLogFile: stored but not used"),
        "{}",
        text(&out.stderr)
    );
    c.apply(&policy("sample-ext-authz-http"));

    let (_, body) = wait_for("the authorizer's denial", Duration::from_secs(30), || {
        status_is(&c, "/headers", &["x-ext-authz: deny", "x-secret: s"], "403")
    });
    assert!(
        body.starts_with(
            "denied: path=/check/headers x-ext-authz=deny secret=False host=payment-service:8080"
        ),
        "{body}"
    );
    let (head, _) = status_is(&c, "/headers", &["x-ext-authz: deny"], "403").unwrap();
    assert!(head.contains("x-ext-authz-check-result: denied"), "{head}");
    let (_, body) = status_is(&c, "/headers", &["x-ext-authz: allow"], "200").unwrap();
    assert!(body.contains("x-ext-authz-check-result: allowed"), "{body}");
    status_is(&c, "/", &[], "200").expect("paths the rule does not match are not checked");

    // Unreachable (no such Service): denied with statusOnError (403);
    // allowed with failOpen.
    c.apply(&mesh_config("gone", false));
    wait_for(
        "an unreachable authorizer denies",
        Duration::from_secs(30),
        || status_is(&c, "/headers", &["x-ext-authz: allow"], "403"),
    );
    c.apply(&mesh_config("gone", true));
    wait_for("failOpen allows", Duration::from_secs(30), || {
        status_is(&c, "/headers", &[], "200")
    });
    // A provider the mesh configuration does not declare: denied.
    c.apply(&policy("nope"));
    let (_, body) = wait_for(
        "an unknown provider denies",
        Duration::from_secs(30),
        || status_is(&c, "/headers", &["x-ext-authz: allow"], "403"),
    );
    assert_eq!(body, "RBAC: access denied");
}
