//! End-to-end scenarios on the local runtime (one test binary).

// Scenarios: a step that cannot be taken is a failed test.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod authz;
mod bad_peers;
mod cli;
mod control;
mod dashboard;
mod drain;
mod ext_authz;
mod hostile;
mod jwt;
mod peer_auth;
mod policy_change;
mod prometheus;
mod protocols;
mod security;
mod telemetry;
mod telemetry_api;
mod tracing;
mod traffic;
mod upstream_tls;
