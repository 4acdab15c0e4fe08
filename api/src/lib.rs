//! The mesh's API: the Kubernetes-shaped objects it reads (with validation
//! that names the document and field path), SPIFFE identities, and the
//! controller-to-proxy protocol with its conversion into domain types.
//!
//! Nothing here knows of a runtime: no I/O, no async.

pub mod analyze;
pub mod annotations;
pub mod authz;
pub mod cluster;
pub mod config_dump;
pub mod crd;
pub mod discovery;
pub mod duration;
pub mod enforcement;
pub mod explain;
pub mod inject;
pub mod istio;
pub mod jwt;
pub mod linkerd;
pub mod manifest;
pub mod otlp;
pub mod peer;
pub mod policy;
pub mod proto;
pub mod protocol;
pub mod routing;
#[cfg(test)]
mod sample;
pub mod spiffe;
pub mod sync;
pub mod telemetry;
pub mod traffic;
