//! The local runtime's store: its API on a Unix socket streams snapshots
//! (`GET /watch`, one JSON document per line), which this store turns
//! into the changes between each and the one before, and reviews tokens
//! (`POST /tokenreview`), as a kube-apiserver would.

use std::path::PathBuf;
use std::time::Duration;

use api::cluster::{Snapshot, TokenReview};
use common::backoff::Backoff;
use common::unix_http::{self, Lines};

use mesh_controller_core::index::{Change, Feed};
use mesh_controller_core::store::{BoxFuture, ReviewError, Store};

/// Reads the local runtime at `socket`.
pub struct LocalStore {
    socket: PathBuf,
}

impl LocalStore {
    /// Starts watching; changes go to `feed` as snapshots arrive.
    pub fn start(socket: PathBuf, feed: Feed) -> Self {
        tokio::spawn(watch_loop(socket.clone(), feed));
        Self { socket }
    }
}

async fn watch_loop(socket: PathBuf, feed: Feed) {
    // What the indexer holds: a reconnection's first snapshot is a
    // difference to it too.
    let mut last = Snapshot::default();
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
    loop {
        match Lines::open(&socket, "/watch").await {
            Ok((status, mut lines)) if status.is_success() => {
                backoff.reset();
                loop {
                    match lines.next_line().await {
                        Ok(Some(line)) => match serde_json::from_slice::<Snapshot>(&line) {
                            Ok(s) => {
                                tracing::debug!(version = s.version, "snapshot");
                                if !feed.send(Change::between(&last, &s)) {
                                    return;
                                }
                                last = s;
                            }
                            Err(e) => tracing::warn!(%e, "bad snapshot from the local runtime"),
                        },
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(%e, "watch broke");
                            break;
                        }
                    }
                }
            }
            Ok((status, _)) => tracing::warn!(%status, "watch refused"),
            Err(e) => tracing::warn!(%e, "local runtime unreachable"),
        }
        tokio::time::sleep(backoff.next_delay()).await;
    }
}

impl Store for LocalStore {
    fn review_token<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<TokenReview, ReviewError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&serde_json::json!({ "token": token }))
                .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
            let (status, body) =
                unix_http::request(&self.socket, hyper::Method::POST, "/tokenreview", body)
                    .await
                    .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
            if status.is_client_error() {
                return Err(ReviewError::Rejected);
            }
            if !status.is_success() {
                return Err(ReviewError::Unavailable(format!("status {status}")));
            }
            serde_json::from_slice(&body).map_err(|e| ReviewError::Unavailable(e.to_string()))
        })
    }
}
