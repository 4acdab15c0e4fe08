use super::*;
use crate::proto::{AuthzAction, AuthzPolicy};

const MESH: &str = r#"
accessLogFile: /dev/stdout
extensionProviders:
- name: sample-ext-authz-http
  envoyExtAuthzHttp:
    service: foo/ext-authz.foo.svc.cluster.local
    port: "8000"
    timeout: 2s
    includeRequestHeadersInCheck: ["X-Ext-Authz"]
    includeAdditionalHeadersInCheck: {X-Added: yes}
    headersToUpstreamOnAllow: ["x-ext-authz-*"]
- name: grpc
  envoyExtAuthzGrpc: {service: ext-authz-grpc.foo.svc.cluster.local, port: 9000}
"#;

fn custom(name: &str, provider: &str) -> AuthzPolicy {
    AuthzPolicy {
        name: name.into(),
        action: AuthzAction::Custom as i32,
        provider: provider.into(),
        ..AuthzPolicy::default()
    }
}

#[test]
fn providers_resolve_with_istios_defaults_and_unknown_ones_say_why() {
    let mesh = parse(MESH).unwrap();
    let notes: Vec<String> = not_used(&mesh).into_iter().map(|n| n.0).collect();
    assert_eq!(
        notes,
        [
            "data.mesh.accessLogFile",
            "data.mesh.extensionProviders[1].envoyExtAuthzGrpc"
        ]
    );
    let policies = [
        custom("foo/a", "sample-ext-authz-http"),
        custom("foo/b", "sample-ext-authz-http"),
        custom("foo/c", "grpc"),
        custom("foo/d", "missing"),
        AuthzPolicy::default(),
    ];
    let got = crate::authz::ext::providers(&policies, &mesh);
    assert_eq!(got.len(), 3, "each provider once: {got:?}");
    let http = got
        .iter()
        .find(|p| p.name == "sample-ext-authz-http")
        .unwrap();
    assert_eq!(
        (http.host.as_str(), http.port),
        ("ext-authz.foo.svc.cluster.local", 8000)
    );
    assert_eq!(http.timeout.as_ref().map(|t| t.seconds), Some(2));
    assert_eq!(http.status_on_error, 403);
    assert!(!http.fail_open);
    assert_eq!(http.include_request_headers, ["x-ext-authz"]);
    assert_eq!(
        http.additional_headers.get("x-added").map(String::as_str),
        Some("yes")
    );
    assert!(crate::authz::ext::header_listed(
        &http.headers_to_upstream_on_allow,
        "x-ext-authz-check-result"
    ));
    assert!(http.error.is_empty());
    let grpc = got.iter().find(|p| p.name == "grpc").unwrap();
    assert!(grpc.error.contains("only kind supported"), "{}", grpc.error);
    let missing = got.iter().find(|p| p.name == "missing").unwrap();
    assert!(
        missing.error.contains("no extension provider"),
        "{}",
        missing.error
    );
}

#[test]
fn bad_providers_are_refused_by_field_path() {
    let bad = "extensionProviders:\n- name: a\n  envoyExtAuthzHttp: {port: 0, statusOnError: teapot, timeout: soon}\n- name: a\n  envoyExtAuthzHttp: {service: x, port: 1, fialOpen: true}\n";
    let problems = parse(bad).unwrap_err();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        ["data.mesh.extensionProviders[1].envoyExtAuthzHttp.fialOpen"],
        "unknown fields first: {problems:?}"
    );
    let bad = bad.replace("fialOpen", "failOpen");
    let problems = parse(&bad).unwrap_err();
    let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "data.mesh.extensionProviders[0].envoyExtAuthzHttp.service",
            "data.mesh.extensionProviders[0].envoyExtAuthzHttp.port",
            "data.mesh.extensionProviders[0].envoyExtAuthzHttp.timeout",
            "data.mesh.extensionProviders[0].envoyExtAuthzHttp.statusOnError",
            "data.mesh.extensionProviders",
        ]
    );
    assert!(is_mesh_config("istio-system", "istio") && is_mesh_config("mesh-system", "istio"));
    assert!(!is_mesh_config("default", "istio"));
}
