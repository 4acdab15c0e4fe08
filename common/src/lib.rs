//! Runtime pieces shared by the proxy, the controller and the CLI: mTLS with
//! SPIFFE identities (rustls), certificate authority helpers (rcgen),
//! jittered backoff, logging setup and readings of `/proc`.

pub mod backoff;
pub mod logging;
pub mod pki;
pub mod procfs;
pub mod prom_text;
pub mod tls;
pub mod unix_http;

pub use api::spiffe::{SpiffeError, SpiffeId};
