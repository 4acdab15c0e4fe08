//! Tracing as Istio sets it up: an OpenTelemetry provider in the mesh
//! configuration, a Telemetry naming it with a sampling percentage, and
//! the demo's apps forwarding the trace headers. An OTLP receiver built
//! on the official `opentelemetry-proto` definitions (meshed, so spans go
//! to it over mTLS) gets one trace across client -> frontend -> orders ->
//! payments with the right parent ids, over gRPC and then over
//! HTTP/protobuf; an incoming sampled flag (W3C and B3) is honoured when
//! the workload samples nothing itself.

use std::collections::HashMap;
use std::time::Duration;

use e2e::{Cluster, needs_root, server, wait_for};
use serde_json::Value;

const SHOP: &str = include_str!("../../../examples/shop.yaml");
const LIMIT: Duration = Duration::from_secs(30);

/// The receiver's Python: the tools' venv, where `install-deps.sh` puts
/// `opentelemetry-proto` and `grpcio`.
fn python() -> String {
    let tools = std::env::var("MESH_TOOLS").unwrap_or_else(|_| "/opt/mesh-tools".into());
    format!("{tools}/venv/bin/python")
}

fn collector() -> String {
    let cmd = serde_json::to_string(&[&python(), &server("otlp_receiver.py"), "4317", "4318"])
        .expect("argv");
    format!(
        r#"
apiVersion: v1
kind: Namespace
metadata: {{name: observability}}
---
apiVersion: v1
kind: Service
metadata: {{name: otel, namespace: observability}}
spec:
  selector: {{app: otel}}
  ports:
  - {{name: grpc-otlp, port: 4317, targetPort: 4317}}
  - {{name: http-otlp, port: 4318, targetPort: 4318}}
---
apiVersion: apps/v1
kind: Deployment
metadata: {{name: otel, namespace: observability}}
spec:
  replicas: 1
  selector: {{matchLabels: {{app: otel}}}}
  template:
    metadata: {{labels: {{app: otel}}}}
    spec:
      containers:
      - name: main
        command: {cmd}
        ports: [{{containerPort: 4317}}, {{containerPort: 4318}}]
"#
    )
}

const MESH: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: istio-system}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    extensionProviders:
    - name: otel
      opentelemetry: {service: otel.observability.svc.cluster.local, port: 4317}
    - name: otel-http
      opentelemetry:
        service: otel.observability.svc.cluster.local
        port: 4318
        http: {path: /v1/traces, timeout: 5s}
"#;

fn telemetry(provider: &str, percent: u32) -> String {
    format!(
        r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {{name: mesh-default, namespace: istio-system}}
spec:
  tracing:
  - providers: [{{name: {provider}}}]
    randomSamplingPercentage: {percent}
"#
    )
}

/// Every span the receiver holds.
fn spans(c: &Cluster) -> Vec<Value> {
    let out = c.exec_ok(
        "shop",
        "deploy/client",
        &[
            "curl",
            "-sS",
            "--max-time",
            "5",
            "http://otel.observability:4318/spans",
        ],
    );
    serde_json::from_str::<Value>(&out)
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

/// A GET of the frontend from the client with `headers`.
fn visit(c: &Cluster, headers: &[String]) -> String {
    let mut argv = vec!["curl", "-sS", "--max-time", "10"];
    for h in headers {
        argv.extend(["-H", h.as_str()]);
    }
    argv.push("http://frontend:8080/");
    c.exec_ok("shop", "deploy/client", &argv)
}

/// The spans of `trace`, ordered from the root down their parent links;
/// an error unless they form one chain of `want` services.
fn chain(all: &[Value], trace: &str, want: &[(&str, &str)]) -> Result<Vec<Value>, String> {
    let spans: Vec<&Value> = all.iter().filter(|s| s["trace_id"] == trace).collect();
    let by_parent: HashMap<&str, &Value> = spans
        .iter()
        .map(|s| (s["parent_span_id"].as_str().unwrap_or_default(), *s))
        .collect();
    let mut out = Vec::new();
    let mut parent = spans
        .iter()
        .find(|s| !spans.iter().any(|p| p["span_id"] == s["parent_span_id"]))
        .map(|s| s["parent_span_id"].as_str().unwrap_or_default())
        .ok_or_else(|| format!("trace {trace}: no root among {} spans", spans.len()))?;
    while let Some(s) = by_parent.get(parent) {
        out.push((*s).clone());
        parent = s["span_id"].as_str().unwrap_or_default();
    }
    let got: Vec<(String, String)> = out
        .iter()
        .map(|s| {
            (
                s["service"].as_str().unwrap_or_default().to_string(),
                s["kind"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(svc, kind)| (svc.to_string(), kind.to_string()))
        .collect();
    if got != want || out.len() != spans.len() {
        return Err(format!(
            "trace {trace}: chain {got:?} of {} spans, want {want:?}",
            spans.len()
        ));
    }
    Ok(out)
}

const CHAIN: &[(&str, &str)] = &[
    ("client.shop", "SPAN_KIND_CLIENT"),
    ("frontend.shop", "SPAN_KIND_SERVER"),
    ("frontend.shop", "SPAN_KIND_CLIENT"),
    ("orders.shop", "SPAN_KIND_SERVER"),
    ("orders.shop", "SPAN_KIND_CLIENT"),
    ("payments.shop", "SPAN_KIND_SERVER"),
];

#[test]
#[ignore = "needs root"]
fn one_trace_across_the_demo_over_otlp() {
    needs_root();
    let c = Cluster::up("tracing", &[]);
    c.apply(&collector());
    c.apply(SHOP);
    c.apply(MESH);
    c.apply(&telemetry("otel", 100));
    for (ns, d) in [
        ("observability", "otel"),
        ("shop", "frontend"),
        ("shop", "orders-v1"),
        ("shop", "orders-v2"),
        ("shop", "payments"),
        ("shop", "client"),
    ] {
        c.wait_ready(ns, d, 1);
    }

    let mut steps = e2e::Steps::new();
    steps.step(
        "gRPC export: a request without trace headers starts one trace of six spans",
        || {
            // The Telemetry reaches each proxy on its own: wait until one
            // whole trace arrives.
            let trace = wait_for("a whole trace", LIMIT, || {
                let answer = visit(&c, &[]);
                if !answer.contains("payments") {
                    return Err(format!("the demo answered {answer:?}"));
                }
                let all = spans(&c);
                let roots: Vec<&str> = all
                    .iter()
                    .filter(|s| s["parent_span_id"] == "" && s["service"] == "client.shop")
                    .filter_map(|s| s["trace_id"].as_str())
                    .collect();
                let tried: Vec<String> = roots
                    .iter()
                    .take(3)
                    .map(|t| chain(&all, t, CHAIN))
                    .map(|r| match r {
                        Ok(_) => String::new(),
                        Err(e) => e,
                    })
                    .collect();
                roots
                    .iter()
                    .find_map(|t| chain(&all, t, CHAIN).ok())
                    .ok_or_else(|| format!("{} spans, none a whole chain: {tried:?}", all.len()))
            });
            let request_id = trace[0]["attributes"]["guid:x-request-id"].clone();
            assert_ne!(request_id, "-", "{trace:?}");
            for s in &trace {
                assert_eq!(s["via"], "grpc", "{s}");
                assert_eq!(s["scope"], "mesh-proxy", "{s}");
                let a = &s["attributes"];
                assert_eq!(a["http.status_code"], "200", "{s}");
                assert_eq!(a["http.method"], "GET", "{s}");
                assert_eq!(a["component"], "proxy", "{s}");
                assert_eq!(a["istio.namespace"], "shop", "{s}");
                assert_eq!(a["guid:x-request-id"], request_id, "one request id: {s}");
                assert!(s["end"].as_u64() >= s["start"].as_u64(), "{s}");
            }
            assert_eq!(trace[0]["name"], "frontend.shop.svc.cluster.local:8080/*");
            assert_eq!(
                trace[0]["attributes"]["upstream_cluster"],
                "outbound|8080||frontend.shop.svc.cluster.local"
            );
            assert_eq!(trace[3]["attributes"]["istio.canonical_service"], "orders");
            assert_eq!(trace[5]["name"], "payments.shop.svc.cluster.local:8080/*");
            // The server span lasts within its client span.
            assert!(trace[1]["start"].as_u64() >= trace[0]["start"].as_u64());
            assert!(trace[1]["end"].as_u64() <= trace[0]["end"].as_u64());
        },
    );

    steps.step(
        "HTTP/protobuf export at 0%: a caller's sampled flag is honoured, in W3C and B3",
        || {
            c.apply(&telemetry("otel-http", 0));
            let parent = "00f067aa0ba902b7";
            // A new trace id each try: until every proxy on the path has
            // the new provider, a try's spans arrive over both.
            let mut tries = 0u32;
            let trace = wait_for("the caller's W3C trace, over HTTP", LIMIT, || {
                tries += 1;
                let w3c = format!("4bf92f3577b34da6a3ce929d0e{tries:06x}");
                visit(&c, &[format!("traceparent: 00-{w3c}-{parent}-01")]);
                let t = wait_for("the try's spans", LIMIT, || chain(&spans(&c), &w3c, CHAIN));
                if t.iter().any(|s| s["via"] != "http") {
                    return Err("not every span over HTTP yet".into());
                }
                Ok(t)
            });
            assert_eq!(
                trace[0]["parent_span_id"], parent,
                "the caller's span is the parent"
            );

            let b3 = "80f198ee56343ba864fe8b2a57d3eff7";
            visit(&c, &[format!("b3: {b3}-e457b5a2e4d86bd1-1")]);
            let multi = "463ac35c9f6413ad463ac35c9f6413ad";
            visit(
                &c,
                &[
                    format!("x-b3-traceid: {multi}"),
                    "x-b3-spanid: a2fb4a1d1a96d312".into(),
                    "x-b3-sampled: 1".into(),
                ],
            );
            // Not sampled by the caller, nor by the workload (0%): a
            // later sampled request proves these were not exported.
            for i in 0..5 {
                visit(&c, &[format!("x-request-id: unsampled-{i}")]);
            }
            visit(
                &c,
                &["traceparent: 00-11111111111111111111111111111111-2222222222222222-00".into()],
            );
            let marker = "99999999999999999999999999999999";
            visit(
                &c,
                &[format!("traceparent: 00-{marker}-2222222222222222-01")],
            );
            wait_for("the B3 traces and the marker", LIMIT, || {
                let all = spans(&c);
                for t in [b3, multi, marker] {
                    chain(&all, t, CHAIN)?;
                }
                Ok(())
            });
            let all = spans(&c);
            let stray: Vec<&Value> = all
                .iter()
                .filter(|s| {
                    s["trace_id"] == "11111111111111111111111111111111"
                        || s["attributes"]["guid:x-request-id"]
                            .as_str()
                            .is_some_and(|r| r.starts_with("unsampled-"))
                })
                .collect();
            assert!(
                stray.is_empty(),
                "unsampled requests were exported: {stray:?}"
            );
        },
    );

    steps.step(
        "the proxies count what they exported and dropped nothing",
        || {
            let m = c.exec_ok(
                "shop",
                "deploy/client",
                &["curl", "-sS", "http://127.0.0.1:15020/metrics"],
            );
            assert!(
                e2e::metrics::sum(&m, "mesh_trace_spans_exported_total", &[]) >= 4.0,
                "{m}"
            );
            assert_eq!(
                e2e::metrics::sum(&m, "mesh_trace_spans_dropped_total", &[]),
                0.0
            );
        },
    );
    steps.finish();
}
