//! The debug API (Istio's istiod serves its own on 15014): `/debug/syncz`
//! lists every connected proxy's sync state, as `meshctl proxy-status`
//! shows it. Plain HTTP on loopback (reached by port-forward on
//! Kubernetes) and, for the local runtime, on a Unix socket.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use axum::Json;
use axum::extract::State;
use axum::routing::get;

use mesh_controller_core::sync::Registry;

/// The routes.
pub fn router(sync: Arc<Registry>) -> axum::Router {
    axum::Router::new()
        .route("/debug/syncz", get(syncz))
        .with_state(sync)
}

async fn syncz(State(sync): State<Arc<Registry>>) -> Json<Vec<api::sync::ProxySync>> {
    Json(sync.list())
}

/// Binds the debug API on `addr` and, if given, `socket`; serves in the
/// background.
pub async fn serve(
    addr: SocketAddr,
    socket: Option<&Path>,
    sync: Arc<Registry>,
) -> anyhow::Result<()> {
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the debug API on {addr}"))?;
    let app = router(sync);
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
