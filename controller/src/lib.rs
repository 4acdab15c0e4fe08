//! The mesh's control plane, as a library: the pure translation of
//! cluster state into what proxies receive ([`index`], [`traffic`],
//! [`service_entry`], [`workload_policy`]), the gRPC services
//! ([`grpc`]: identity and discovery), the CA ([`ca`]), per-proxy sync
//! state ([`sync`]) and its debug API ([`debug`]), and the stores it reads
//! ([`store`]). `main.rs` only reads flags and wires them; `cargo xtask
//! bench-controller` drives the index and the discovery sessions at scale.

pub mod ca;
pub mod debug;
pub mod grpc;
pub mod index;
pub mod service_entry;
pub mod store;
pub mod sync;
pub mod traffic;
pub mod workload_policy;
