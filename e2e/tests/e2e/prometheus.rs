//! Debian's Prometheus scraping the demo through the runtime's `file_sd`
//! target list, and the queries users copy from Istio's documentation and
//! dashboards answering the right numbers for traffic of known shape: a
//! steady rate through frontend -> orders -> payments, a known share of
//! 5xx, a known share of slow requests, and a known count of TCP
//! connections over mTLS.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::{Cluster, client, http_and_tcp_app, needs_root, versioned, wait_for};

const SHOP: &str = include_str!("../../../examples/shop.yaml");
const DASHBOARD: &str = include_str!("../../../dashboards/mesh-overview.json");
/// Where Prometheus listens, on the node namespace's own loopback.
const ADDR: &str = "127.0.0.1:19090";
/// Requests per second of each kind of the load, and for how long.
const RATE: f64 = 10.0;
const LOAD_SECS: u64 = 75;

/// Prometheus, stopped on drop.
struct Prometheus(Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The series of an instant query at `at` (now when `None`); an error
/// while Prometheus does not answer.
fn try_series(c: &Cluster, q: &str, at: Option<f64>) -> Result<Vec<serde_json::Value>, String> {
    let url = format!("http://{ADDR}/api/v1/query");
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        &c.node_ns(),
        "curl",
        "-sS",
        "--max-time",
        "10",
    ])
    .args(["--data-urlencode", &format!("query={q}")]);
    if let Some(t) = at {
        cmd.args(["--data-urlencode", &format!("time={t}")]);
    }
    let out = cmd.arg(&url).output().expect("curl");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "{q}: {e}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if v["status"] != "success" {
        return Err(format!("{q}: {v}"));
    }
    Ok(v["data"]["result"].as_array().cloned().unwrap_or_default())
}

/// [`try_series`], which must answer.
fn series(c: &Cluster, q: &str, at: Option<f64>) -> Vec<serde_json::Value> {
    try_series(c, q, at).unwrap_or_else(|e| panic!("{e}"))
}

/// A query's single value (`None`: no series).
fn query(c: &Cluster, q: &str, at: Option<f64>) -> Option<f64> {
    series(c, q, at).first()?["value"][1].as_str()?.parse().ok()
}

/// Each series of a query by one label: (label value, value).
fn query_by(c: &Cluster, q: &str, label: &str, at: f64) -> Vec<(String, f64)> {
    series(c, q, Some(at))
        .iter()
        .filter_map(|s| {
            Some((
                s["metric"][label].as_str()?.to_string(),
                s["value"][1].as_str()?.parse().ok()?,
            ))
        })
        .collect()
}

#[test]
#[ignore = "needs root"]
fn istio_queries_answer_the_right_numbers() {
    needs_root();
    assert!(
        Command::new("prometheus").arg("--version").output().is_ok(),
        "prometheus is not installed: apt-get install prometheus (scripts/install-deps.sh does)"
    );
    let c = Cluster::up("prometheus", &[]);
    c.apply(SHOP);
    c.apply(&client("obs", true));
    c.apply(&versioned("obs", "api", 8080, &[("v1", 1, "")]));
    c.apply(&http_and_tcp_app("obs", "db"));
    for d in ["frontend", "orders-v1", "orders-v2", "payments", "client"] {
        c.wait_ready("shop", d, 1);
    }
    for d in ["client", "api-v1", "db"] {
        c.wait_ready("obs", d, 1);
    }

    // The runtime keeps the target list current, with a configuration
    // beside it.
    let dir = c.state.join("prometheus");
    let cfg = dir.join("prometheus.yml");
    wait_for("the file_sd targets", Duration::from_secs(20), || {
        let t = std::fs::read_to_string(dir.join("targets.json")).map_err(|e| e.to_string())?;
        let n = t.matches(":15020").count();
        if n >= 8 {
            Ok(())
        } else {
            Err(format!("{n} targets: {t}"))
        }
    });
    let data = c.state.join("prometheus-data");
    let prom = Prometheus(
        Command::new("ip")
            .args(["netns", "exec", &c.node_ns(), "prometheus"])
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!("--storage.tsdb.path={}", data.display()))
            .arg(format!("--web.listen-address={ADDR}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(c.state.join("prometheus.log")).expect("log"),
            ))
            .spawn()
            .expect("prometheus"),
    );
    wait_for("every target up", Duration::from_secs(60), || {
        let up = try_series(&c, "count(up == 1)", None)?;
        match up
            .first()
            .and_then(|s| s["value"][1].as_str()?.parse::<f64>().ok())
        {
            Some(n) if n >= 8.0 => Ok(()),
            other => Err(format!("{other:?} up")),
        }
    });

    // TCP: four connections to db's raw port, over mTLS.
    for i in 0..4 {
        c.tcp_send("obs", "deploy/client", "db", 9091, &format!("m{i}"));
    }
    // The load: RATE per second to the shop's frontend, and RATE to api,
    // of which one in four answers 500 (503 would be retried by the default
    // retry policy, and each try counted) and one in ten waits 300 ms.
    let script = format!(
        r#"
import time, urllib.request, urllib.error
start, n = time.time(), int({RATE} * {LOAD_SECS})
for i in range(n):
    time.sleep(max(0.0, start + i / {RATE} - time.time()))
    q = "status=500" if i % 4 == 0 else ("delay=300" if i % 10 == 5 else "")
    for url in ("http://frontend.shop:8080/", "http://api:8080/?" + q):
        try:
            urllib.request.urlopen(url, timeout=5).read()
        except urllib.error.HTTPError:
            pass
"#
    );
    let started = Instant::now();
    c.exec_ok("obs", "deploy/client", &["python3", "-c", &script]);
    assert!(
        started.elapsed() < Duration::from_secs(LOAD_SECS + 20),
        "the load fell behind its schedule"
    );
    // Judged at two seconds before the load ended (a one-minute window
    // inside the load), once scrapes after it are in.
    let at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
        - 2.0;
    std::thread::sleep(Duration::from_secs(7));

    let mut steps = e2e::Steps::new();
    steps.step("meshctl stat and edges read the same Prometheus", || {
        // First, while the one-minute window still mostly holds the load
        // (it ends now, seconds after it): rates a little under 10.
        // meshctl runs in the node namespace, where Prometheus' port is;
        // with --prometheus it reads nothing else.
        let meshctl = e2e::bin_dir().join("meshctl");
        let run = |args: &[&str]| {
            let out = Command::new("ip")
                .args(["netns", "exec", &c.node_ns()])
                .arg(&meshctl)
                .args(args)
                .args(["--prometheus", &format!("http://{ADDR}"), "-o", "json"])
                .output()
                .expect("meshctl");
            assert!(out.status.success(), "{}", e2e::text(&out.stderr));
            serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("JSON")
        };
        let rows = run(&["stat", "deploy", "-n", "obs", "--window", "1m"]);
        let api = rows
            .as_array()
            .and_then(|r| r.iter().find(|r| r["name"] == "api-v1"))
            .unwrap_or_else(|| panic!("no api-v1 in {rows}"))
            .clone();
        let rps = api["rps"].as_f64().unwrap();
        assert!((5.0..11.0).contains(&rps), "{api}");
        let ok = api["success_rate"].as_f64().unwrap();
        assert!((0.65..0.85).contains(&ok), "one in four failed: {api}");
        let p99 = api["latency_p99_ms"].as_f64().unwrap();
        assert!((250.0..500.0).contains(&p99), "{api}");
        assert_eq!(api["mtls_share"], 1.0, "{api}");
        let edges = run(&["edges", "deploy", "-A"]);
        let found = edges.as_array().is_some_and(|e| {
            e.iter()
                .any(|e| e["src"] == "orders-v1" && e["dst"] == "payments" && e["secured"] == true)
        });
        assert!(found, "orders-v1 -> payments over mTLS in {edges}");
    });
    steps.step("requests per second by destination_service", || {
        let q = r#"sum(rate(istio_requests_total{reporter="destination"}[1m])) by (destination_service)"#;
        let rates = query_by(&c, q, "destination_service", at);
        for svc in ["frontend.shop", "orders.shop", "payments.shop", "api.obs"] {
            let host = format!("{svc}.svc.cluster.local");
            let r = rates.iter().find(|(s, _)| *s == host).map(|(_, r)| *r);
            assert!(
                r.is_some_and(|r| (RATE * 0.8..RATE * 1.2).contains(&r)),
                "{host}: {r:?} per second, sent {RATE}; all: {rates:?}"
            );
        }
    });
    steps.step("the 5xx ratio", || {
        let q = r#"sum(rate(istio_requests_total{reporter="destination",destination_service_name="api",response_code=~"5.."}[1m])) / sum(rate(istio_requests_total{reporter="destination",destination_service_name="api"}[1m]))"#;
        let ratio = query(&c, q, Some(at)).expect("a ratio");
        assert!((0.2..0.3).contains(&ratio), "5xx ratio {ratio}, sent 0.25");
    });
    steps.step("the p99 from the duration histogram", || {
        // One request in ten waits 300 ms: the 99th percentile lies in
        // the 250-500 ms bucket; the median is fast.
        let q = r#"histogram_quantile(0.99, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_service_name="api"}[1m])) by (le))"#;
        let p99 = query(&c, q, Some(at)).expect("a p99");
        assert!((250.0..=500.0).contains(&p99), "p99 {p99} ms");
        let q = r#"histogram_quantile(0.5, sum(rate(istio_request_duration_milliseconds_bucket{reporter="destination",destination_service_name="api"}[1m])) by (le))"#;
        let p50 = query(&c, q, Some(at)).expect("a p50");
        assert!(p50 < 100.0, "p50 {p50} ms");
    });
    steps.step("TCP connections over mTLS", || {
        let q = r#"sum(istio_tcp_connections_opened_total{connection_security_policy="mutual_tls",destination_service_name="db"})"#;
        assert_eq!(query(&c, q, None), Some(4.0));
    });
    steps.step("request and response sizes", || {
        let q = r#"sum(increase(istio_response_bytes_count{reporter="destination",destination_service_name="api"}[5m]))"#;
        let n = query(&c, q, Some(at)).expect("sizes counted");
        let sent = RATE * LOAD_SECS as f64;
        assert!((sent * 0.9..sent * 1.2).contains(&n), "{n} responses sized, sent {sent}");
    });
    steps.step(
        "every query of the shipped Grafana dashboard answers",
        || {
            let dashboard: serde_json::Value =
                serde_json::from_str(DASHBOARD).expect("dashboard JSON");
            let mut answered = Vec::new();
            for panel in dashboard["panels"].as_array().expect("panels") {
                for target in panel["targets"].as_array().expect("targets") {
                    // Grafana's variables, as "All" and a 1m window.
                    let q = target["expr"]
                        .as_str()
                        .expect("expr")
                        .replace("$namespace", ".*")
                        .replace("$__rate_interval", "1m");
                    let s = series(&c, &q, Some(at));
                    answered.push((
                        panel["title"].as_str().unwrap_or_default().to_string(),
                        s.len(),
                    ));
                }
            }
            // The traffic panels have data from the load; the rest answer.
            for title in [
                "Request rate by service",
                "Success rate by service",
                "p50 / p99 latency by service",
                "Who calls whom (rps)",
                "mTLS share of requests",
                "Proxies in sync with the controller",
                "Earliest certificate expiry",
            ] {
                assert!(
                    answered.iter().any(|(t, n)| t == title && *n > 0),
                    "{title}: no data in {answered:?}"
                );
            }
        },
    );
    drop(prom);
    steps.finish();
}
