//! `meshctl proxy-status`: one line per proxy with its config sync state,
//! read from the controller's `/debug/syncz` (like `istioctl
//! proxy-status`). Meshed pods whose proxy holds no stream are listed too.

use api::sync::{ProxySync, SyncStatus};
use hyper::Method;
use serde::Serialize;

use crate::cli::ProxyStatusArgs;
use crate::local::StateDir;
use crate::local::client::Client;
use crate::local::objects::PodStatus;
use crate::output::{age, print_data, table};

/// One proxy as shown.
#[derive(Serialize)]
struct Row {
    #[serde(flatten)]
    sync: Option<ProxySync>,
    /// `pod.namespace`.
    name: String,
    /// SYNCED, STALE, ERROR...; `NOT CONNECTED` for a meshed pod whose
    /// proxy holds no stream.
    status: String,
}

/// Prints the sync state of every proxy of the local runtime.
pub async fn proxy_status(args: &ProxyStatusArgs) -> anyhow::Result<i32> {
    let state = StateDir::resolve(args.state.state_dir.clone());
    let pods: Vec<PodStatus> = Client::new(state.clone()).get("/pods").await?;
    let (code, body) = common::unix_http::request(
        &state.controller_socket(),
        Method::GET,
        "/debug/syncz",
        Vec::new(),
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "the controller is not answering ({e}); `meshctl local controller start` starts it"
        )
    })?;
    anyhow::ensure!(code.is_success(), "/debug/syncz: {code}");
    let streams: Vec<ProxySync> = serde_json::from_slice(&body)?;
    let rows = rows(streams, &pods, args.namespace.as_deref());
    if print_data(args.output, &rows)? {
        return Ok(0);
    }
    let now = now();
    let table_rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let s = r.sync.as_ref();
            let version = |e: Option<&api::sync::Exchange>| {
                e.map_or_else(|| "-".to_string(), |e| e.version.clone())
            };
            vec![
                r.name.clone(),
                r.status.clone(),
                version(s.and_then(|s| s.sent.as_ref())),
                version(s.and_then(|s| s.acked.as_ref())),
                s.map_or_else(|| "-".into(), |s| s.subscriptions.to_string()),
                s.map_or_else(|| "-".into(), |s| s.controller.clone()),
                s.map_or_else(|| "-".into(), |s| age(now.saturating_sub(s.last_seen))),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "STATUS",
            "SENT",
            "ACKED",
            "SUBSCRIPTIONS",
            "CONTROLLER",
            "LAST SEEN",
        ],
        &table_rows,
    );
    for r in &rows {
        if let Some(n) = r.sync.as_ref().and_then(|s| s.nacked.as_ref())
            && r.status == SyncStatus::Error.as_str()
        {
            for e in &n.errors {
                println!(
                    "{}: refused {} (version {}): {}",
                    r.name, e.name, n.of.version, e.error
                );
            }
        }
    }
    Ok(0)
}

/// Streams by pod name, then meshed running pods without a stream.
fn rows(streams: Vec<ProxySync>, pods: &[PodStatus], namespace: Option<&str>) -> Vec<Row> {
    let in_ns = |ns: &str| namespace.is_none_or(|n| n == ns);
    let mut rows: Vec<Row> = streams
        .into_iter()
        .filter(|s| in_ns(&s.namespace))
        .map(|s| Row {
            name: s.name(),
            status: s.status().as_str().to_string(),
            sync: Some(s),
        })
        .collect();
    for p in pods {
        let name = format!("{}.{}", p.name, p.namespace);
        if p.meshed && in_ns(&p.namespace) && !rows.iter().any(|r| r.name == name) {
            rows.push(Row {
                name,
                status: "NOT CONNECTED".into(),
                sync: None,
            });
        }
    }
    rows.sort_by(|a, b| a.name.cmp(&b.name));
    rows
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
