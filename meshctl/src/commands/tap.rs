//! `meshctl tap` and `meshctl top`, as Linkerd Viz's: live requests
//! streamed from the proxies' admin API (`/tap`: headers and outcome,
//! never bodies) of a workload's pods, filtered by method, path, status
//! and authority; `top` gathers them into the busiest paths.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

use super::viz::source;
use crate::cli::{Output, TapArgs};
use crate::output::table;

/// One request as a proxy's tap told it, with the pod that told it.
#[derive(Debug, Clone, serde::Deserialize, Serialize)]
pub struct Event {
    /// The pod whose proxy saw it.
    #[serde(default)]
    pub pod: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    /// Method.
    pub method: String,
    /// Authority.
    pub authority: String,
    /// Path.
    pub path: String,
    /// Request headers.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// Status.
    pub status: u16,
    /// gRPC status.
    pub grpc_status: Option<String>,
    /// Milliseconds.
    pub latency_ms: f64,
    /// Client workload.
    pub source: String,
    /// Server workload.
    pub destination: String,
    /// Over mTLS.
    pub tls: bool,
}

fn query(a: &TapArgs, max: usize, seconds: u64) -> String {
    let mut q = vec![format!("max={max}"), format!("seconds={seconds}")];
    let enc = |v: &str| {
        v.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'/' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect::<String>()
    };
    for (k, v) in [
        ("method", &a.method),
        ("path", &a.path),
        ("authority", &a.authority),
        ("direction", &a.direction),
    ] {
        if let Some(v) = v {
            q.push(format!("{k}={}", enc(v)));
        }
    }
    if let Some(s) = a.status {
        q.push(format!("status={s}"));
    }
    format!("/tap?{}", q.join("&"))
}

/// Streams events from the target's pods until `max` came or `duration`
/// passed; `each` sees them as they come.
async fn gather(a: &TapArgs, mut each: impl FnMut(&Event)) -> anyhow::Result<Vec<Event>> {
    anyhow::ensure!(
        a.scope.prometheus.is_none(),
        "--prometheus: tap and top stream live requests from the proxies themselves; a Prometheus has none (use it with stat and edges)"
    );
    let duration = api::duration::parse(&a.duration)
        .map_err(|e| anyhow::anyhow!("--duration {}: {e}", a.duration))?;
    let src = source(&a.scope).await?.select(&a.target);
    let pods = src.names();
    anyhow::ensure!(
        !pods.is_empty(),
        "no ready meshed pod is {} in namespace {}",
        a.target,
        a.scope.namespace
    );
    let (tx, mut rx) = tokio::sync::mpsc::channel(256);
    src.stream_admin(&query(a, a.max, duration.as_secs().max(1)), &tx);
    drop(tx);
    let mut out = Vec::new();
    let deadline = tokio::time::sleep(duration + Duration::from_secs(2));
    tokio::pin!(deadline);
    while out.len() < a.max {
        let (pod, line) = tokio::select! {
            () = &mut deadline => break,
            got = rx.recv() => match got { Some(g) => g, None => break },
        };
        let Ok(mut e) = serde_json::from_str::<Event>(&line) else {
            if line.contains("missed") {
                eprintln!("warning: {pod}: the tap fell behind and missed requests");
            }
            continue;
        };
        e.pod = pod;
        each(&e);
        out.push(e);
    }
    Ok(out)
}

/// `meshctl tap`.
pub async fn tap(a: &TapArgs) -> anyhow::Result<i32> {
    let json = a.scope.output == Output::Json;
    let events = gather(a, |e| {
        if json {
            if let Ok(line) = serde_json::to_string(e) {
                println!("{line}");
            }
        } else {
            println!(
                "{} {} {} -> {} :method={} :authority={} :path={} :status={}{} latency={:.1}ms tls={}",
                e.pod,
                e.direction,
                e.source,
                e.destination,
                e.method,
                e.authority,
                e.path,
                e.status,
                e.grpc_status
                    .as_deref()
                    .map(|g| format!(" grpc-status={g}"))
                    .unwrap_or_default(),
                e.latency_ms,
                e.tls
            );
        }
    })
    .await?;
    if events.is_empty() {
        eprintln!("no request matched in {}", a.duration);
    }
    Ok(0)
}

/// One row of `top`.
#[derive(Debug, Serialize, PartialEq)]
pub struct Row {
    /// Client workload.
    pub source: String,
    /// Server workload.
    pub destination: String,
    /// Method.
    pub method: String,
    /// Path (without the query).
    pub path: String,
    /// Requests seen.
    pub count: usize,
    /// Fastest, ms.
    pub best_ms: f64,
    /// Slowest, ms.
    pub worst_ms: f64,
    /// Latest, ms.
    pub last_ms: f64,
    /// Share not answered 5xx.
    pub success_rate: f64,
}

/// The busiest (source, destination, method, path), busiest first. A
/// request both proxies of the target saw is counted once (inbound).
pub fn top_rows(events: &[Event]) -> Vec<Row> {
    let mut rows: BTreeMap<(String, String, String, String), Row> = BTreeMap::new();
    for e in events {
        let path = e.path.split('?').next().unwrap_or_default().to_string();
        let key = (
            e.source.clone(),
            e.destination.clone(),
            e.method.clone(),
            path.clone(),
        );
        let r = rows.entry(key).or_insert_with(|| Row {
            source: e.source.clone(),
            destination: e.destination.clone(),
            method: e.method.clone(),
            path,
            count: 0,
            best_ms: f64::MAX,
            worst_ms: 0.0,
            last_ms: 0.0,
            success_rate: 0.0,
        });
        let ok = r.success_rate * r.count as f64 + f64::from(u8::from(e.status < 500));
        r.count += 1;
        r.success_rate = ok / r.count as f64;
        r.best_ms = r.best_ms.min(e.latency_ms);
        r.worst_ms = r.worst_ms.max(e.latency_ms);
        r.last_ms = e.latency_ms;
    }
    let mut rows: Vec<Row> = rows.into_values().collect();
    rows.sort_by(|a, b| b.count.cmp(&a.count).then(a.path.cmp(&b.path)));
    rows
}

/// `meshctl top`.
pub async fn top(a: &TapArgs) -> anyhow::Result<i32> {
    let events = gather(a, |_| {}).await?;
    let rows = top_rows(&events);
    if crate::output::print_data(a.scope.output, &rows)? {
        return Ok(0);
    }
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.source.clone(),
                r.destination.clone(),
                r.method.clone(),
                r.path.clone(),
                r.count.to_string(),
                format!("{:.1}ms", r.best_ms),
                format!("{:.1}ms", r.worst_ms),
                format!("{:.1}ms", r.last_ms),
                format!("{:.2}%", r.success_rate * 100.0),
            ]
        })
        .collect();
    table(
        &[
            "SOURCE",
            "DESTINATION",
            "METHOD",
            "PATH",
            "COUNT",
            "BEST",
            "WORST",
            "LAST",
            "SUCCESS RATE",
        ],
        &cells,
    );
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(path: &str, status: u16, ms: f64) -> Event {
        Event {
            pod: "orders-1".into(),
            direction: "inbound".into(),
            method: "GET".into(),
            authority: "orders:8080".into(),
            path: path.into(),
            headers: vec![],
            status,
            grpc_status: None,
            latency_ms: ms,
            source: "web".into(),
            destination: "orders".into(),
            tls: true,
        }
    }

    #[test]
    fn top_counts_paths_busiest_first() {
        let rows = top_rows(&[
            event("/a?x=1", 200, 5.0),
            event("/b", 200, 1.0),
            event("/a?x=2", 503, 9.0),
            event("/a", 200, 2.0),
        ]);
        assert_eq!(rows.len(), 2);
        let a = &rows[0];
        assert_eq!((a.path.as_str(), a.count), ("/a", 3));
        assert_eq!((a.best_ms, a.worst_ms, a.last_ms), (2.0, 9.0, 2.0));
        assert!((a.success_rate - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(rows[1].path, "/b");
    }
}
