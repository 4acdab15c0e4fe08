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

/// Prints the sync state of every proxy.
pub async fn proxy_status(args: &ProxyStatusArgs) -> anyhow::Result<i32> {
    let state = StateDir::resolve(args.state.state_dir.clone());
    let (streams, meshed) = match crate::k8s::target(&args.kube, &state).await? {
        crate::k8s::Target::Local => local(&state).await?,
        crate::k8s::Target::Kubernetes(client) => kubernetes(&client).await?,
    };
    let rows = rows(streams, &meshed, args.namespace.as_deref());
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

/// A meshed pod: (namespace, name).
type Meshed = (String, String);

/// The local runtime's streams and meshed pods.
async fn local(state: &StateDir) -> anyhow::Result<(Vec<ProxySync>, Vec<Meshed>)> {
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
    let meshed = pods
        .into_iter()
        .filter(|p| p.meshed)
        .map(|p| (p.namespace, p.name))
        .collect();
    Ok((serde_json::from_slice(&body)?, meshed))
}

/// Every controller replica's streams (through port-forwards to their
/// debug port) and the running pods that carry a proxy.
async fn kubernetes(client: &kube::Client) -> anyhow::Result<(Vec<ProxySync>, Vec<Meshed>)> {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, ListParams};
    let ns = crate::install::NAMESPACE;
    let controllers: Api<Pod> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default().labels(&format!("app={}", crate::install::render::CONTROLLER));
    let mut streams = Vec::new();
    let mut reached = 0;
    for c in controllers.list(&lp).await? {
        let name = c.metadata.name.clone().unwrap_or_default();
        match crate::k8s::forward::http_get(client, ns, &name, 15014, "/debug/syncz").await {
            Ok(body) => {
                streams.extend(serde_json::from_slice::<Vec<ProxySync>>(&body)?);
                reached += 1;
            }
            Err(e) => eprintln!("controller {ns}/{name}: {e:#}"),
        }
    }
    anyhow::ensure!(
        reached > 0,
        "no controller answered: is the mesh installed? (meshctl check)"
    );
    let pods: Api<Pod> = Api::all(client.clone());
    let meshed = pods
        .list(&ListParams::default())
        .await?
        .into_iter()
        .filter(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running"))
        .filter(crate::k8s::carries_proxy)
        .map(|p| {
            (
                p.metadata.namespace.unwrap_or_default(),
                p.metadata.name.unwrap_or_default(),
            )
        })
        .collect();
    Ok((streams, meshed))
}

/// (name, status) of every proxy of a cluster, for `check`.
pub async fn kubernetes_rows(
    client: &kube::Client,
    namespace: Option<&str>,
) -> anyhow::Result<Vec<(String, String)>> {
    let (streams, meshed) = kubernetes(client).await?;
    Ok(rows(streams, &meshed, namespace)
        .into_iter()
        .map(|r| (r.name, r.status))
        .collect())
}

/// Streams by pod name, then meshed running pods without a stream.
fn rows(streams: Vec<ProxySync>, meshed: &[Meshed], namespace: Option<&str>) -> Vec<Row> {
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
    for (ns, pod) in meshed {
        let name = format!("{pod}.{ns}");
        if in_ns(ns) && !rows.iter().any(|r| r.name == name) {
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
