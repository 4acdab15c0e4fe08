//! The controller's pure core: the translation of cluster state into
//! what proxies receive ([`index`], [`traffic`], [`service_entry`],
//! [`workload_policy`]), the admission webhooks' decisions
//! ([`admission`]), the CA ([`ca`]), per-proxy sync state ([`sync`])
//! and the [`store::Store`] seam that the local and Kubernetes backends
//! fill. No transport and no backend here: the gRPC services
//! (`mesh-controller-grpc`), the stores (`mesh-controller-local`) and the
//! binary (`mesh-controller`) depend on this crate, never the reverse.

pub mod admission;
pub mod ca;
pub mod index;
pub mod peer_auth;
pub mod service_entry;
pub mod store;
pub mod sync;
#[cfg(test)]
mod testing;
pub mod traffic;
pub mod workload_policy;
