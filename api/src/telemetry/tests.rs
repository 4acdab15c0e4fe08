use super::*;
use crate::istio::mesh_config;

fn telemetries(yaml: &str) -> Vec<Resource<TelemetrySpec>> {
    yaml.split("\n---\n")
        .map(|d| serde_yaml_ng::from_str(d).unwrap())
        .collect()
}

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

const MESH: &str = r#"
extensionProviders:
- name: otel
  opentelemetry: {service: observability/otel.observability.svc.cluster.local, port: 4317}
- name: otel-http
  opentelemetry:
    service: otel.observability.svc.cluster.local
    port: 4318
    http: {path: traces, timeout: 2s, headers: [{name: X-Tenant, value: shop}]}
- name: authz
  envoyExtAuthzHttp: {service: authz.foo.svc.cluster.local, port: 8000}
"#;

const ALL: &str = r#"apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: mesh-default, namespace: mesh-system}
spec:
  tracing: [{providers: [{name: otel}], randomSamplingPercentage: 10}]
  accessLogging: [{providers: [{name: envoy}], disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: shop, namespace: shop}
spec:
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400"}
  metrics:
  - overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      tagOverrides:
        request_host: {value: request.host}
        request_protocol: {operation: REMOVE}
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: orders, namespace: shop}
spec:
  selector: {matchLabels: {app: orders}}
  tracing:
  - providers: [{name: otel-http}]
    match: {mode: CLIENT}
    disableSpanReporting: true
    customTags:
      team: {literal: {value: payments}}
      user: {header: {name: X-User, defaultValue: anon}}
  metrics:
  - overrides:
    - match: {metric: REQUEST_DURATION}
      disabled: true
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: other, namespace: other}
spec:
  accessLogging: [{disabled: true}]"#;

#[test]
fn merged_from_root_to_namespace_to_workload() {
    let all = telemetries(ALL);
    let mesh = mesh_config::parse(MESH).unwrap();

    // A workload of `shop` without its own Telemetry: the root's tracing,
    // the namespace's access log (its filter, both sides) and overrides.
    let p = compile(&all, &mesh, "shop", &labels(&[("app", "web")])).unwrap();
    assert_eq!(p.sources, ["mesh-system/mesh-default", "shop/shop"]);
    let t = p.tracing.unwrap();
    assert_eq!(t.sampling, 10.0);
    assert!(t.client && t.server);
    let provider = t.provider.unwrap();
    assert_eq!(
        (provider.host.as_str(), provider.port, provider.http),
        ("otel.observability.svc.cluster.local", 4317, false)
    );
    assert_eq!(provider.error, "");
    let log = p.access_log.unwrap();
    assert!(log.client && log.server);
    assert_eq!(log.filter, "response.code >= 400");
    assert_eq!(p.metrics.len(), 1);
    let m = &p.metrics[0];
    assert_eq!(
        (m.metric.as_str(), m.client, m.server),
        ("REQUEST_COUNT", false, true)
    );
    assert_eq!(m.tags["request_host"].value, "request.host");
    assert!(m.tags["request_protocol"].remove);

    // orders: its own provider over HTTP, client spans off, tags, and one
    // more override after the namespace's.
    let p = compile(&all, &mesh, "shop", &labels(&[("app", "orders")])).unwrap();
    assert_eq!(p.sources.last().unwrap(), "shop/orders");
    let t = p.tracing.unwrap();
    assert_eq!(t.sampling, 10.0, "inherited from the root");
    assert!(!t.client && t.server);
    let provider = t.provider.unwrap();
    assert!(provider.http);
    assert_eq!(provider.path, "/traces");
    assert_eq!(provider.headers["x-tenant"], "shop");
    assert_eq!(t.tags["team"], "literal:payments");
    assert_eq!(t.tags["user"], "header:x-user=anon");
    assert_eq!(p.metrics.len(), 2);
    assert!(p.metrics[1].disabled);

    // Another namespace: its own Telemetry turns access logs off.
    let p = compile(&all, &mesh, "other", &labels(&[])).unwrap();
    let log = p.access_log.unwrap();
    assert!(!log.client && !log.server);

    // Nothing applies, no default provider: nothing to send.
    assert!(compile(&all[1..], &mesh, "quiet", &labels(&[])).is_none());
}

#[test]
fn providers_resolve_or_say_why_not() {
    let all = telemetries(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata: {name: t, namespace: a}\nspec:\n  tracing: [{providers: [{name: authz}]}]",
    );
    let mesh = mesh_config::parse(MESH).unwrap();
    let t = compile(&all, &mesh, "a", &labels(&[]))
        .unwrap()
        .tracing
        .unwrap();
    assert!(
        t.provider
            .unwrap()
            .error
            .contains("not an opentelemetry provider")
    );
    assert_eq!(t.sampling, DEFAULT_SAMPLING);

    // The mesh's default tracing provider applies with no Telemetry.
    let mesh =
        mesh_config::parse(&format!("{MESH}defaultProviders: {{tracing: [otel]}}\n")).unwrap();
    let t = compile(&[], &mesh, "a", &labels(&[]))
        .unwrap()
        .tracing
        .unwrap();
    assert_eq!(t.provider.unwrap().name, "otel");
}
