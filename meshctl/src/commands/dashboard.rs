//! `meshctl dashboard`: a web page of the mesh, served on loopback by
//! meshctl itself (as `linkerd viz dashboard` serves one), from the same
//! reads as `stat` and `edges`: every `--interval` it scrapes every meshed
//! pod's proxy, computes the topology and health ([`crate::viz::graph`])
//! over the interval, and keeps a few minutes of each workload's rate,
//! error rate and p99 for the charts. The page (`assets/dashboard.html`,
//! no outside scripts) reads `/api/graph` and `/api/history`.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use serde::Serialize;

use crate::cli::{DashboardArgs, VizScope};
use crate::viz::graph::{Graph, graph};

/// The page.
const PAGE: &str = include_str!("../../assets/dashboard.html");

/// Points of history kept per workload.
const HISTORY: usize = 150;

/// One workload's figures at one time.
#[derive(Debug, Clone, Serialize)]
struct Point {
    /// Unix seconds.
    t: f64,
    rps: f64,
    error_rate: Option<f64>,
    p99_ms: Option<f64>,
}

#[derive(Default)]
struct Seen {
    graph: Option<Graph>,
    /// By `namespace/workload`.
    history: BTreeMap<String, VecDeque<Point>>,
}

type Shared = Arc<RwLock<Seen>>;

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn current(State(s): State<Shared>) -> Json<Option<Graph>> {
    Json(s.read().unwrap_or_else(|e| e.into_inner()).graph.clone())
}

async fn history(State(s): State<Shared>) -> Json<BTreeMap<String, VecDeque<Point>>> {
    Json(s.read().unwrap_or_else(|e| e.into_inner()).history.clone())
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Reads the proxies every `interval`, forever.
async fn follow(scope: VizScope, interval: Duration, seen: Shared) {
    let mut before: Option<(tokio::time::Instant, Vec<crate::viz::Scrape>)> = None;
    loop {
        let started = tokio::time::Instant::now();
        match super::viz::source(&scope).await {
            Ok(src) => {
                let after = super::viz::scrape(&src).await;
                if let Some((at, b)) = &before {
                    let g = graph(b, &after, at.elapsed().as_secs_f64());
                    let t = now();
                    let mut s = seen.write().unwrap_or_else(|e| e.into_inner());
                    for n in g.nodes.iter().filter(|n| n.meshed) {
                        let h = s
                            .history
                            .entry(format!("{}/{}", n.namespace, n.workload))
                            .or_default();
                        h.push_back(Point {
                            t,
                            rps: n.rps,
                            error_rate: n.success_rate.map(|s| 1.0 - s),
                            p99_ms: n.p99_ms,
                        });
                        while h.len() > HISTORY {
                            h.pop_front();
                        }
                    }
                    s.graph = Some(g);
                }
                before = Some((tokio::time::Instant::now(), after));
            }
            Err(e) => eprintln!("warning: {e:#}"),
        }
        tokio::time::sleep_until(started + interval).await;
    }
}

/// `meshctl dashboard`.
pub async fn dashboard(args: DashboardArgs) -> anyhow::Result<i32> {
    let interval = api::duration::parse(&args.interval)
        .map_err(|e| anyhow::anyhow!("--interval {}: {e}", args.interval))?;
    anyhow::ensure!(
        interval >= Duration::from_millis(500),
        "--interval must be at least 500ms"
    );
    let scope = VizScope {
        all_namespaces: args.namespace.is_none(),
        namespace: args.namespace.unwrap_or_default(),
        state: args.state,
        kube: args.kube,
        output: Default::default(),
        prometheus: None,
    };
    // Fail early when there is nothing to read.
    super::viz::source(&scope).await?;
    let seen: Shared = Arc::default();
    tokio::spawn(follow(scope, interval, seen.clone()));
    let app = axum::Router::new()
        .route("/", get(page))
        .route("/api/graph", get(current))
        .route("/api/history", get(history))
        .with_state(seen);
    let listener = tokio::net::TcpListener::bind(args.address)
        .await
        .map_err(|e| anyhow::anyhow!("--address {}: {e}", args.address))?;
    println!(
        "dashboard: http://{}/ (Ctrl-C to stop)",
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(0)
}
