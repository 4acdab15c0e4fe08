//! The runtime's API on its Unix socket: objects in and out for the CLI,
//! a snapshot watch and token review for the controller (as a
//! kube-apiserver serves both).

use std::sync::Arc;

use api::manifest::Object;
use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::Notify;
use tokio_stream::wrappers::WatchStream;

use super::daemon::Controller;
use super::netns;
use super::objects::RunInfo;
use super::store::Store;

/// What the handlers share.
pub struct Api {
    /// The store.
    pub store: Arc<Store>,
    /// Run id.
    pub id: String,
    /// The controller's supervisor.
    pub controller: Arc<Controller>,
    /// Notified by `POST /shutdown`.
    pub shutdown: Arc<Notify>,
}

/// The routes.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/info", get(info))
        .route("/apply", post(apply))
        .route("/delete", post(delete))
        .route("/pods", get(pods))
        .route("/services", get(services))
        .route("/objects", get(objects))
        .route("/watch", get(watch))
        .route("/tokenreview", post(token_review))
        .route("/controller/{action}", post(controller))
        .route("/shutdown", post(shutdown))
        .with_state(api)
}

type S = State<Arc<Api>>;

async fn info(State(api): S) -> Json<RunInfo> {
    Json(RunInfo {
        id: api.id.clone(),
        pid: std::process::id(),
        node_ns: netns::node_ns(&api.id),
        controller_running: api.controller.running(),
    })
}

async fn apply(State(api): S, Json(objects): Json<Vec<Object>>) -> impl IntoResponse {
    Json(api.store.apply(objects))
}

async fn delete(State(api): S, Json(objects): Json<Vec<Object>>) -> impl IntoResponse {
    Json(api.store.delete(objects))
}

async fn pods(State(api): S) -> impl IntoResponse {
    let mut pods = api.store.pods();
    let seqs = api.store.read(|s| {
        s.pods
            .values()
            .map(|p| ((p.namespace.clone(), p.name.clone()), p.seq))
            .collect::<std::collections::HashMap<_, _>>()
    });
    for p in &mut pods {
        if let Some(seq) = seqs.get(&(p.namespace.clone(), p.name.clone())) {
            p.netns = netns::pod_ns(&api.id, *seq);
        }
    }
    Json(pods)
}

async fn services(State(api): S) -> impl IntoResponse {
    Json(api.store.services())
}

async fn objects(State(api): S) -> impl IntoResponse {
    Json(api.store.objects())
}

async fn watch(State(api): S) -> Response {
    let stream = WatchStream::new(api.store.snapshots()).map(|snap| {
        let mut line = serde_json::to_vec(&*snap).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, std::convert::Infallible>(line)
    });
    Body::from_stream(stream).into_response()
}

#[derive(Deserialize)]
struct TokenReviewRequest {
    token: String,
}

async fn token_review(State(api): S, Json(req): Json<TokenReviewRequest>) -> Response {
    match api.store.review_token(&req.token) {
        Some(r) => Json(r).into_response(),
        None => (StatusCode::FORBIDDEN, "token not valid\n").into_response(),
    }
}

async fn controller(
    State(api): S,
    axum::extract::Path(action): axum::extract::Path<String>,
) -> Response {
    match action.as_str() {
        "stop" => api.controller.stop().await,
        "start" => api.controller.start(),
        _ => return (StatusCode::NOT_FOUND, "use stop or start\n").into_response(),
    }
    Json(serde_json::json!({ "running": api.controller.running() })).into_response()
}

async fn shutdown(State(api): S) -> impl IntoResponse {
    api.shutdown.notify_one();
    Json(serde_json::json!({ "stopping": true }))
}
