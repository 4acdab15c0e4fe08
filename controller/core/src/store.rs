//! Where the controller reads cluster state from. Backends produce a
//! [`Snapshot`] stream and review bootstrap tokens; the local runtime's is
//! in [`local`], the Kubernetes one comes later with the same shape.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use api::cluster::{Snapshot, TokenReview};
use tokio::sync::watch;

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    /// The token proves nothing.
    #[error("token rejected")]
    Rejected,
    /// The store could not be asked.
    #[error("token review unavailable: {0}")]
    Unavailable(String),
}

/// A boxed future, so that the trait stays object safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A source of cluster state.
pub trait Store: Send + Sync + 'static {
    /// The latest snapshot, updated on every change.
    fn snapshots(&self) -> watch::Receiver<Arc<Snapshot>>;

    /// Who holds `token`.
    fn review_token<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<TokenReview, ReviewError>>;
}
