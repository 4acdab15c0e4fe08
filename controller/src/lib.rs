//! `mesh-controller`, the binary's crate: it wires the pure core
//! (`mesh-controller-core`), the gRPC services (`mesh-controller-grpc`)
//! and a store (`mesh-controller-local`; the Kubernetes one comes next)
//! and serves the debug API ([`debug`]) and the admission webhooks
//! ([`webhook`]); it fetches the JWKS of RequestAuthentications
//! ([`jwks`]). `main.rs` only reads flags.

pub mod debug;
pub mod jwks;
pub mod webhook;
