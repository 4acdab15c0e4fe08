//! Health, metrics and admin endpoints, each on its own listener, off the
//! data path: `/ready`, `/live`, `/metrics` (also at Istio's
//! `/stats/prometheus`) on the health port (all
//! interfaces); `/config_dump` and `/explain/{outbound,inbound}` on the
//! loopback admin port.

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;

use crate::control::ControllerAddr;
use crate::discovery::{Discovery, Slot};
use crate::drain::Watch;
use crate::{Pod, Telemetry};

mod app_probe;
mod dump;
mod explain;
mod own;

pub use app_probe::AppProbes;

/// What the admin and health endpoints read.
pub(crate) struct State {
    /// The pod the proxy serves.
    pub pod: Arc<Pod>,
    /// Its configuration.
    pub discovery: Arc<Discovery>,
    /// Its metrics.
    pub telemetry: Arc<Telemetry>,
    /// The controller it talks to.
    pub controller: ControllerAddr,
    /// Whether it drains.
    pub drain: Watch,
    /// The app's probes, run for kubelet.
    pub app_probes: AppProbes,
    /// The inbound side, whose policy explanations judge with.
    pub inbound: Arc<crate::inbound::Inbound>,
}

use crate::traffic::outlier::EndpointState;

/// The health port's routes.
pub(crate) fn health(ctx: Arc<State>) -> Router {
    Router::new()
        .route("/ready", get(ready))
        .route("/healthz/ready", get(ready))
        .route("/live", get(|| async { "live\n" }))
        .route("/metrics", get(metrics))
        .route("/stats/prometheus", get(metrics))
        .route("/app-health/{container}/{kind}", get(app_health))
        .with_state(ctx)
}

/// The admin port's routes.
pub(crate) fn admin(ctx: Arc<State>) -> Router {
    Router::new()
        .route("/config_dump", get(config_dump))
        .route("/explain/outbound", get(explain_outbound))
        .route("/explain/inbound", get(explain_inbound))
        .route("/tap", get(tap))
        .with_state(ctx)
}

async fn ready(axum::extract::State(ctx): axum::extract::State<Arc<State>>) -> impl IntoResponse {
    if ctx.drain.draining() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining\n".to_string());
    }
    let cert = ctx.pod.identity.credentials().is_some();
    let config = ctx.discovery.synced_once();
    match (cert, config) {
        (true, true) => (StatusCode::OK, "ready\n".to_string()),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: certificate={cert} config={config}\n"),
        ),
    }
}

async fn app_health(
    axum::extract::State(ctx): axum::extract::State<Arc<State>>,
    uri: axum::http::Uri,
) -> StatusCode {
    ctx.app_probes
        .run(uri.path())
        .await
        .unwrap_or(StatusCode::NOT_FOUND)
}

async fn metrics(axum::extract::State(ctx): axum::extract::State<Arc<State>>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        ctx.telemetry.metrics.render()
            + &own::circuits(&ctx)
            + &own::health(&ctx)
            + &crate::metrics::process(),
    )
}

/// Every endpoint circuit the routers hold, by destination host.
pub(crate) fn circuits(ctx: &State) -> std::collections::BTreeMap<String, Vec<EndpointState>> {
    let mut out = std::collections::BTreeMap::new();
    for slot in ctx.discovery.dump().addresses.values() {
        if let Slot::Known { target } = slot {
            for (host, states) in target.router.circuits() {
                out.entry(host.to_string()).or_insert(states);
            }
        }
    }
    out
}

/// Live requests as JSON lines, those `filter` wants, until it has
/// enough, its time is up or the watcher leaves.
async fn tap(
    axum::extract::State(ctx): axum::extract::State<Arc<State>>,
    axum::extract::Query(filter): axum::extract::Query<crate::tap::Filter>,
) -> impl IntoResponse {
    let mut rx = ctx.telemetry.tap.watch();
    let (tx, out) = tokio::sync::mpsc::channel::<Result<Vec<u8>, std::convert::Infallible>>(64);
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(filter.duration());
        tokio::pin!(deadline);
        let mut sent = 0;
        while sent < filter.max() {
            let event = tokio::select! {
                () = &mut deadline => break,
                () = tx.closed() => break,
                e = rx.recv() => e,
            };
            let line = match event {
                Ok(e) if filter.matches(&e) => serde_json::to_vec(&*e),
                Ok(_) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    serde_json::to_vec(&serde_json::json!({ "missed": n }))
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            };
            let Ok(mut line) = line else { continue };
            line.push(b'\n');
            if tx.send(Ok(line)).await.is_err() {
                break;
            }
            sent += 1;
        }
    });
    (
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(out)),
    )
}

async fn config_dump(
    axum::extract::State(ctx): axum::extract::State<Arc<State>>,
) -> impl IntoResponse {
    Json(dump::config_dump(&ctx))
}

type Explained<T> = Result<Json<T>, (StatusCode, String)>;

fn explained<T>(r: Result<T, String>) -> Explained<T> {
    r.map(Json).map_err(|e| (StatusCode::BAD_REQUEST, e + "\n"))
}

async fn explain_outbound(
    axum::extract::State(ctx): axum::extract::State<Arc<State>>,
    axum::extract::Query(q): axum::extract::Query<api::explain::Query>,
) -> Explained<api::explain::Outbound> {
    explained(explain::outbound(&ctx, &q).await)
}

async fn explain_inbound(
    axum::extract::State(ctx): axum::extract::State<Arc<State>>,
    axum::extract::Query(q): axum::extract::Query<api::explain::Query>,
) -> Explained<api::explain::Inbound> {
    explained(explain::inbound(&ctx, &q))
}
