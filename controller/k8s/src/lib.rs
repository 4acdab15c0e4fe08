//! The controller's Kubernetes store: reflectors over an API server feed
//! the same snapshots as the local runtime's store; TokenReview proves
//! proxies' ServiceAccount tokens; a Lease picks the one replica that
//! writes (status conditions, trust-anchor ConfigMaps, webhook caBundles).

pub mod convert;
pub mod leader;
pub mod lease;
pub mod store;

pub use store::KubeStore;
