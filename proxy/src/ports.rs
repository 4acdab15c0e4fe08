//! The proxy's well-known ports (Istio's numbers).

/// Outbound traffic redirected from the app.
pub const OUTBOUND: u16 = 15001;
/// Inbound plaintext redirected from outside the mesh.
pub const INBOUND: u16 = 15006;
/// Inbound mTLS from other proxies (never redirected).
pub const MTLS: u16 = 15008;
/// Health and metrics, all interfaces.
pub const HEALTH: u16 = 15020;
/// Admin (`/config_dump`), loopback only.
pub const ADMIN: u16 = 15000;
