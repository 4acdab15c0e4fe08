//! The Telemetry API's access logging and metric overrides, as Istio's
//! documentation writes them: the namespace's Telemetry turns the access
//! log off, a workload's turns it on for errors only
//! (`response.code >= 400`) with Envoy's fields; a metric override
//! removes one label, adds `request_host` from `request.host`, sets
//! another from a request header, and switches the request duration off
//! for the server side.

use std::time::Duration;

use e2e::{Cluster, client, needs_root, text, versioned, wait_for};
use serde_json::Value;

const NS: &str = "tapi";
const LIMIT: Duration = Duration::from_secs(20);

const TELEMETRY: &str = r#"
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: quiet, namespace: tapi}
spec:
  accessLogging: [{providers: [{name: envoy}], disabled: true}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: web-errors, namespace: tapi}
spec:
  selector: {matchLabels: {app: web}}
  accessLogging:
  - providers: [{name: envoy}]
    filter: {expression: "response.code >= 400"}
  metrics:
  - providers: [{name: prometheus}]
    overrides:
    - match: {metric: REQUEST_COUNT, mode: SERVER}
      tagOverrides:
        request_protocol: {operation: REMOVE}
        request_host: {value: request.host}
        source_canonical_revision: {value: "request.headers['x-rev']"}
    - match: {metric: REQUEST_DURATION, mode: SERVER}
      disabled: true
"#;

/// A GET of web from the client; its status.
fn get(c: &Cluster, path: &str) -> String {
    c.exec_ok(
        NS,
        "deploy/client",
        &[
            "curl",
            "-sS",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            &format!("http://web:8080{path}"),
        ],
    )
}

/// The access-log lines of `deploy`'s proxy whose path starts `prefix`.
fn logged(c: &Cluster, deploy: &str, prefix: &str) -> Vec<Value> {
    let out = c.meshctl(&["logs", &format!("deploy/{deploy}"), "-n", NS, "-c", "proxy"]);
    text(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["path"].as_str().is_some_and(|p| p.starts_with(prefix)))
        .collect()
}

fn metrics(c: &Cluster, deploy: &str) -> String {
    c.deploy_metrics(NS, deploy)
}

#[test]
#[ignore = "needs root"]
fn access_logs_and_metric_overrides_follow_telemetry() {
    needs_root();
    let c = Cluster::up("telemetry-api", &[]);
    c.apply(&client(NS, true));
    c.apply(&versioned(NS, "web", 8080, &[("v1", 1, "")]));
    c.wait_ready(NS, "client", 1);
    c.wait_ready(NS, "web-v1", 1);
    let mut steps = e2e::Steps::new();

    steps.step(
        "without a Telemetry: the client's proxy logs, web's does not",
        || {
            assert_eq!(get(&c, "/before"), "200");
            wait_for("the client's log line", LIMIT, || {
                let lines = logged(&c, "client", "/before");
                (lines.len() == 1).then_some(()).ok_or(format!("{lines:?}"))
            });
            assert!(logged(&c, "web-v1", "/before").is_empty());
        },
    );

    c.apply(TELEMETRY);
    steps.step(
        "web logs errors only, with Envoy's fields; the namespace's Telemetry silences the client",
        || {
            // The policy reaches the proxies on its own: probe until an
            // error is logged by web and not by the client.
            let mut n = 0;
            wait_for("web to log an error", LIMIT, || {
                n += 1;
                assert_eq!(get(&c, &format!("/probe-{n}?status=503")), "503");
                let web = logged(&c, "web-v1", "/probe-");
                (!web.is_empty()).then_some(()).ok_or("not yet".to_string())
            });
            let client_before = logged(&c, "client", "/").len();
            for (path, code) in [
                ("/ok", "200"),
                ("/missing?status=404", "404"),
                ("/fail?status=500", "500"),
            ] {
                assert_eq!(get(&c, path), code);
            }
            let lines = wait_for("web's two error lines", LIMIT, || {
                let lines: Vec<Value> = ["/ok", "/missing", "/fail"]
                    .iter()
                    .flat_map(|p| logged(&c, "web-v1", p))
                    .collect();
                (lines.len() >= 2)
                    .then_some(lines)
                    .ok_or("not yet".to_string())
            });
            let codes: Vec<u64> = lines
                .iter()
                .filter_map(|l| l["response_code"].as_u64())
                .collect();
            assert_eq!(codes, [404, 500], "only errors: {lines:?}");
            let l = &lines[0];
            assert_eq!(l["method"], "GET");
            assert_eq!(l["authority"], "web:8080");
            // As the server's proxy got it: over the mesh's HTTP/2.
            assert_eq!(l["protocol"], "HTTP/2");
            assert_eq!(l["upstream_cluster"], "inbound|8080||");
            assert!(l["bytes_received"].as_u64().unwrap() > 0, "{l}");
            assert!(l["bytes_sent"].as_u64().unwrap() > 0, "{l}");
            assert!(l["duration"].is_u64(), "{l}");
            assert!(
                l["start_time"].as_str().is_some_and(|t| t.contains('T')),
                "{l}"
            );
            assert_ne!(l["x_request_id"], "-", "{l}");
            assert_eq!(
                l["downstream_peer_uri_san"],
                format!("spiffe://cluster.local/ns/{NS}/sa/default")
            );
            assert_eq!(
                l["upstream_peer_uri_san"],
                format!("spiffe://cluster.local/ns/{NS}/sa/web")
            );
            // Give the client's writer time to have written, had it logged.
            std::thread::sleep(Duration::from_millis(300));
            assert_eq!(
                logged(&c, "client", "/").len(),
                client_before,
                "the client logs nothing now"
            );
        },
    );

    steps.step(
        "metric overrides: a label removed, one added, one set from a header, a metric off",
        || {
            let sent = c.exec_ok(
                NS,
                "deploy/client",
                &[
                    "curl",
                    "-sS",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "-H",
                    "x-rev: canary",
                    "http://web:8080/rev",
                ],
            );
            assert_eq!(sent, "200");
            let web = metrics(&c, "web-v1");
            let count = |labels: &[(&str, &str)]| {
                let mut want = vec![("reporter", "destination")];
                want.extend_from_slice(labels);
                e2e::metrics::sum(&web, "istio_requests_total", &want)
            };
            // The requests since the Telemetry (the first was counted
            // before it, with the standard labels): no protocol, the
            // added request_host, the revision from x-rev when sent.
            let since = count(&[("request_host", "web:8080"), ("request_protocol", "")]);
            assert!(since >= 4.0, "{web}");
            assert_eq!(
                count(&[("source_canonical_revision", "canary")]),
                1.0,
                "{web}"
            );
            assert_eq!(
                count(&[
                    ("request_host", "web:8080"),
                    ("source_canonical_revision", "unknown")
                ]),
                since - 1.0,
                "no header: unknown, as Istio: {web}"
            );
            assert!(
                !web.lines().any(|l| l.starts_with("istio_requests_total{")
                    && l.contains("request_host=\"web:8080\"")
                    && l.contains("request_protocol=\"http\"")),
                "request_protocol removed on the server side: {web}"
            );
            // Other metrics keep Istio's labels.
            assert!(
                !web.lines()
                    .any(|l| l.starts_with("istio_request_bytes_count{")
                        && l.contains("request_host=")),
                "{web}"
            );
            assert_eq!(
                e2e::metrics::sum(
                    &web,
                    "istio_request_duration_milliseconds_count",
                    &[("reporter", "destination")]
                ),
                0.0,
                "switched off (and the families remade, from zero, when the tag was added): {web}"
            );
            // The client side is untouched: no added tag.
            let client = metrics(&c, "client");
            assert!(!client.contains("request_host="), "{client}");
            assert!(
                e2e::metrics::sum(
                    &client,
                    "istio_requests_total",
                    &[
                        ("reporter", "source"),
                        (
                            "destination_service",
                            &format!("web.{NS}.svc.cluster.local")
                        ),
                        ("request_protocol", "http")
                    ],
                ) >= 3.0,
                "{client}"
            );
            assert!(
                e2e::metrics::sum(
                    &client,
                    "istio_request_duration_milliseconds_count",
                    &[("reporter", "source")]
                ) >= 3.0,
                "{client}"
            );
        },
    );
    steps.finish();
}
