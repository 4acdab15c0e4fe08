//! Where the controller reads cluster state from. A backend, once
//! started, sends its changes into an [`index::Feed`](crate::index::Feed)
//! and reviews bootstrap tokens: the local runtime's
//! (`mesh-controller-local`) and the Kubernetes one
//! (`mesh-controller-k8s`).

use std::future::Future;
use std::pin::Pin;

use api::cluster::TokenReview;

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

/// A source of cluster state, for what is asked of it after its start.
pub trait Store: Send + Sync + 'static {
    /// Who holds `token`.
    fn review_token<'a>(
        &'a self,
        token: &'a str,
    ) -> BoxFuture<'a, Result<TokenReview, ReviewError>>;
}
