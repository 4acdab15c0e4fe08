//! The debug API (Istio's istiod serves its own on 15014): `/debug/syncz`
//! lists every connected proxy's sync state, as `meshctl proxy-status`
//! shows it; `/ready` answers 200 once the first state has been read
//! from the store (the Deployment's readiness probe). Plain HTTP on loopback (reached by port-forward on
//! Kubernetes) and, for the local runtime, on a Unix socket.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Json;
use axum::extract::State;
use axum::routing::get;

use axum::http::StatusCode;
use mesh_controller_core::index::Index;
use mesh_controller_core::sync::Registry;
use tokio::sync::watch;

/// What the routes read.
#[derive(Clone)]
pub struct Debug {
    /// Every proxy's sync state.
    pub sync: Arc<Registry>,
    /// The index proxies are served from.
    pub index: watch::Receiver<Arc<Index>>,
}

/// The routes.
pub fn router(state: Debug) -> axum::Router {
    axum::Router::new()
        .route("/debug/syncz", get(syncz))
        .route("/ready", get(ready))
        .with_state(state)
}

async fn syncz(State(d): State<Debug>) -> Json<Vec<api::sync::ProxySync>> {
    Json(d.sync.list())
}

async fn ready(State(d): State<Debug>) -> (StatusCode, &'static str) {
    if d.index.borrow().version > 0 {
        (StatusCode::OK, "ready\n")
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            "waiting for the first state from the store\n",
        )
    }
}

/// Binds the debug API on `addr` and, if given, `socket`; serves in the
/// background.
pub async fn serve(addr: SocketAddr, socket: Option<&Path>, state: Debug) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the debug API on {addr}"))?;
    let app = router(state);
    if let Some(path) = socket {
        let _ = std::fs::remove_file(path);
        let unix = tokio::net::UnixListener::bind(path)
            .with_context(|| format!("binding the debug API on {}", path.display()))?;
        let app = app.clone();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(unix, app).await {
                tracing::error!(error = %e, "debug API (socket) stopped");
            }
        });
    }
    tokio::spawn(async move {
        if let Err(e) = axum::serve(tcp, app).await {
            tracing::error!(error = %e, "debug API stopped");
        }
    });
    Ok(())
}
