//! An AuthorizationPolicy changed under constant load: every request that
//! ends before the change is applied passes, every request that starts
//! after the server's proxy acknowledged it (per `proxy-status`) is
//! denied, and the same the other way when the policy is deleted. No
//! request fails otherwise.

use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use e2e::{Cluster, client, http_and_tcp_app, needs_root, text, wait_for};

const NS: &str = "change";

const DENY_GET: &str = "apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: no-get, namespace: change}
spec:
  selector: {matchLabels: {app: payment-service}}
  action: DENY
  rules: [{to: [{operation: {methods: [GET]}}]}]
";

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// The version the server's proxy acknowledged last, once in sync.
fn acked(c: &Cluster) -> Option<u64> {
    let out = c.meshctl_top(&["proxy-status", "-n", NS, "-o", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).ok()?;
    let row = rows.iter().find(|r| {
        r["pod"]
            .as_str()
            .is_some_and(|p| p.starts_with("payment-service"))
    })?;
    if row["status"] != "SYNCED" {
        return None;
    }
    row["acked"]["version"].as_str()?.parse().ok()
}

/// Waits until the server's proxy acknowledged a version after `before`;
/// the time it was seen.
fn wait_acked(c: &Cluster, before: u64, what: &str) -> f64 {
    wait_for(what, Duration::from_secs(30), || match acked(c) {
        Some(v) if v > before => Ok(now()),
        other => Err(format!("acked {other:?}")),
    })
}

/// One request of the load: (start, end, status).
fn parse(line: &str) -> (f64, f64, String) {
    let mut f = line.split_whitespace();
    let mut t = || f.next().unwrap_or_default().to_string();
    (t().parse().unwrap(), t().parse().unwrap(), t())
}

#[test]
#[ignore = "needs root"]
fn a_policy_change_under_load_holds_from_its_acknowledgement() {
    needs_root();
    let c = Cluster::up("change", &[]);
    c.apply(&format!(
        "{}---{}",
        client(NS, true),
        http_and_tcp_app(NS, "payment-service")
    ));
    c.wait_ready(NS, "client", 1);
    c.wait_ready(NS, "payment-service", 1);
    let v0 = wait_for(
        "the server's proxy in sync",
        Duration::from_secs(30),
        || acked(&c).ok_or_else(|| "not synced".to_string()),
    );

    let stop = c.state.join("load.stop");
    let script = e2e::server("load_log.py");
    let stop_arg = stop.display().to_string();
    let mut load = c.spawn_exec(
        NS,
        "deploy/client",
        &[
            "python3",
            &script,
            "http://payment-service:8080/",
            &stop_arg,
            "60",
            "20000",
        ],
    );
    let mut stdout = load.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    std::thread::sleep(Duration::from_secs(2));

    let applied = now();
    c.apply(DENY_GET);
    let denied_from = wait_acked(&c, v0, "the DENY acknowledged");
    let v1 = acked(&c).unwrap();
    std::thread::sleep(Duration::from_secs(2));

    let deleted = now();
    let out = c.meshctl_input(&["delete", "-f", "-"], DENY_GET);
    assert!(out.status.success(), "delete: {}", text(&out.stderr));
    let allowed_from = wait_acked(&c, v1, "the deletion acknowledged");
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(&stop, "").unwrap();
    let status = load.wait().unwrap();
    let log = reader.join().unwrap();
    assert!(status.success(), "load: {log}");

    let requests: Vec<(f64, f64, String)> = log.lines().map(parse).collect();
    let window = |from: f64, to: f64| -> Vec<&str> {
        requests
            .iter()
            .filter(|(s, e, _)| *s > from && *e < to)
            .map(|(_, _, st)| st.as_str())
            .collect()
    };
    let before = window(0.0, applied);
    let during = window(denied_from, deleted);
    let after = window(allowed_from, f64::MAX);
    for (name, part, want) in [
        ("before the DENY", &before, "200"),
        ("after the DENY was acknowledged", &during, "403"),
        ("after the deletion was acknowledged", &after, "200"),
    ] {
        assert!(part.len() >= 20, "{name}: only {} requests", part.len());
        let wrong: Vec<_> = part.iter().filter(|s| **s != want).collect();
        assert!(
            wrong.is_empty(),
            "{name}: {} of {} were {wrong:?}",
            wrong.len(),
            part.len()
        );
    }
    let failed: Vec<_> = requests
        .iter()
        .filter(|(_, _, s)| s != "200" && s != "403")
        .collect();
    assert!(failed.is_empty(), "failed requests: {failed:?}");
}
