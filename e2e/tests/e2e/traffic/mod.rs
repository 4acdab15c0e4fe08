//! Traffic management applied through the controller and enforced by the
//! client's proxy, with curl against the traffic test server: routing and
//! canaries, rewrites and friends, resilience (retries, timeouts, faults)
//! and balancing (subsets' policies, consistent hashing, mirroring).

use std::time::{Duration, Instant};

use e2e::Cluster;

/// `curl` in the client pod; stdout.
pub fn curl(c: &Cluster, ns: &str, args: &[&str]) -> String {
    let mut argv = vec!["curl", "-sS", "--max-time", "60"];
    argv.extend(args);
    c.exec_ok(ns, "deploy/client", &argv)
}

/// `n` requests by curl, `parallel` at a time, each its own connection:
/// (status, seconds) per request.
pub fn requests(
    c: &Cluster,
    ns: &str,
    n: usize,
    parallel: usize,
    args: &[&str],
) -> Vec<(u16, f64)> {
    let script = r#"n=$1; p=$2; shift 2; seq "$n" | xargs -P "$p" -I{} curl -sS --max-time 60 -o /dev/null -w '%{http_code} %{time_total}\n' "$@""#;
    let (n, parallel) = (n.to_string(), parallel.to_string());
    let mut argv = vec!["sh", "-c", script, "sh", &n, &parallel];
    argv.extend(args);
    c.exec_ok(ns, "deploy/client", &argv)
        .lines()
        .map(|l| {
            let (code, t) = l
                .split_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            (code.parse().unwrap(), t.trim().parse().unwrap())
        })
        .collect()
}

/// Bodies per pod-name prefix: how many answer lines start with
/// `pod=<prefix>`.
pub fn count(out: &str, prefix: &str) -> usize {
    out.lines()
        .filter(|l| l.starts_with(&format!("pod={prefix}")))
        .count()
}

/// The `/__stats` of every pod of Deployment `deploy`: (count, shadow).
pub fn stats(c: &Cluster, ns: &str, deploy: &str) -> Vec<(u64, u64)> {
    c.pods()
        .into_iter()
        .filter(|p| p.namespace == ns && p.deployment == deploy && p.ready)
        .map(|p| {
            let ip = p.ip.unwrap();
            let out = curl(c, ns, &[&format!("http://{ip}:8080/__stats")]);
            let num = |k: &str| {
                out.split_whitespace()
                    .find_map(|kv| kv.strip_prefix(k))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or_else(|| panic!("bad stats {out:?}"))
            };
            (num("count="), num("shadow="))
        })
        .collect()
}

pub fn total(s: &[(u64, u64)]) -> u64 {
    s.iter().map(|(c, _)| c).sum()
}

/// Waits (bounded) until `f` holds; returns how long it took.
pub fn until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
    start.elapsed()
}

/// The client proxy's `/config_dump`.
pub fn config_dump(c: &Cluster, ns: &str) -> serde_json::Value {
    let out = curl(c, ns, &["http://127.0.0.1:15000/config_dump"]);
    serde_json::from_str(&out).unwrap()
}

mod balancing;
mod circuit;
mod egress;
mod opaque;
mod ratelimit;
mod resilience;
mod routing;
