//! The controller's Kubernetes store: reflectors over an API server feed
//! the index object by object; TokenReview proves
//! proxies' ServiceAccount tokens; a Lease picks the one replica that
//! writes (status conditions, trust-anchor ConfigMaps, webhook caBundles).

pub mod convert;
pub mod leader;
pub mod lease;
pub mod references;
pub mod reflect;
pub mod store;

pub use store::KubeStore;
