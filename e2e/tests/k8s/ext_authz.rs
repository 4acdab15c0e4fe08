//! A CUSTOM AuthorizationPolicy on the real node: the HTTP authorizer is
//! declared in the mesh configuration (ConfigMap `istio` in the mesh's
//! namespace) and runs as a Service of its own, a busybox CGI script
//! that allows on `x-ext-authz: allow` and denies otherwise.

use e2e::k8s::{Node, ok};

use crate::security::{WEB, curl, until_code};
use crate::step;

const AUTHORIZER: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: ext-authz, namespace: plain}
data:
  authz: |
    #!/bin/sh
    if [ "$HTTP_X_EXT_AUTHZ" = allow ]; then
      printf 'Status: 200 OK\r\nx-ext-authz-check-result: allowed\r\n\r\n'
    else
      printf 'Status: 403 Forbidden\r\nx-ext-authz-check-result: denied\r\nContent-Type: text/plain\r\n\r\ndenied %s%s\n' "$SCRIPT_NAME" "$PATH_INFO"
    fi
---
apiVersion: v1
kind: Service
metadata: {name: ext-authz, namespace: plain}
spec:
  selector: {app: ext-authz}
  ports: [{name: http, port: 8000, targetPort: 8000}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: ext-authz, namespace: plain}
spec:
  selector: {matchLabels: {app: ext-authz}}
  template:
    metadata: {labels: {app: ext-authz}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: local/tools:1
        imagePullPolicy: Never
        command: ["httpd", "-f", "-p", "8000", "-h", "/srv"]
        volumeMounts: [{name: cgi, mountPath: /srv/cgi-bin}]
      volumes:
      - name: cgi
        configMap: {name: ext-authz, defaultMode: 0755}
"#;

const MESH_CONFIG: &str = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: mesh-system}
data:
  mesh: |-
    extensionProviders:
    - name: busybox-ext-authz
      envoyExtAuthzHttp:
        service: ext-authz.plain.svc.cluster.local
        port: "8000"
        pathPrefix: /cgi-bin/authz
        includeRequestHeadersInCheck: ["x-ext-authz"]
        headersToDownstreamOnDeny: ["x-ext-authz-check-result"]
"#;

const CUSTOM: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: ext-authz, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  action: CUSTOM
  provider: {name: busybox-ext-authz}
  rules: [{to: [{operation: {paths: ["/index.html"]}}]}]
"#;

pub fn custom_provider(node: &Node) {
    step("CUSTOM: the mesh configuration's HTTP authorizer decides");
    ok(node.apply(AUTHORIZER), "apply the authorizer");
    node.rollout("plain", "ext-authz", 120);
    ok(node.apply(MESH_CONFIG), "apply the mesh configuration");
    ok(node.apply(CUSTOM), "apply the CUSTOM policy");

    let web = ("shop", "deploy/client");
    // The rule names /index.html: busybox takes a trailing slash after
    // the script for a directory.
    let checked = format!("{WEB}index.html");
    let denied = until_code(node, "the authorizer denies", web, &checked, &[], |c| {
        c == "403"
    });
    assert!(
        denied.body.starts_with("denied /cgi-bin/authz/index.html"),
        "the authorizer's own answer: {}",
        denied.body
    );
    assert!(
        denied.head.contains("x-ext-authz-check-result: denied"),
        "{}",
        denied.head
    );
    let allowed = curl(node, web.0, web.1, &checked, &["x-ext-authz: allow"]);
    assert_eq!(allowed.code, "200", "{}", allowed.body);
    let unchecked = curl(node, web.0, web.1, WEB, &[]);
    assert_eq!(
        unchecked.code, "200",
        "a path the rule does not name: {}",
        unchecked.body
    );

    ok(
        node.kubectl(&["delete", "-n", "shop", "authorizationpolicy/ext-authz"]),
        "delete the CUSTOM policy",
    );
    until_code(node, "allowed again", web, &checked, &[], |c| c == "200");
    ok(
        node.kubectl(&["delete", "-n", "mesh-system", "configmap/istio"]),
        "delete the mesh configuration",
    );
    ok(
        node.kubectl(&[
            "delete",
            "-n",
            "plain",
            "deploy/ext-authz",
            "service/ext-authz",
            "configmap/ext-authz",
        ]),
        "delete the authorizer",
    );
}
