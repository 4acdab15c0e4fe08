//! The proxy's own health on `/metrics`, read at scrape time: endpoint
//! circuits, open connections, the configuration's version and sync
//! state, and the certificate's expiry.

use std::fmt::Write as _;
use std::time::UNIX_EPOCH;

use super::State;
use crate::traffic::outlier::Circuit;

/// The circuits as a gauge: 1 for the state each endpoint is in.
pub(super) fn circuits(ctx: &State) -> String {
    let mut s = String::from(
        "# HELP mesh_outlier_circuit Endpoint circuit state under outlier detection (1: current).\n# TYPE mesh_outlier_circuit gauge\n",
    );
    for (host, states) in super::circuits(ctx) {
        for e in states {
            for (name, c) in [
                ("closed", Circuit::Closed),
                ("open", Circuit::Open),
                ("half_open", Circuit::HalfOpen),
            ] {
                let v = u8::from(e.circuit == c);
                let _ = writeln!(
                    s,
                    "mesh_outlier_circuit{{destination_service=\"{host}\",endpoint=\"{}\",state=\"{name}\"}} {v}",
                    e.address
                );
            }
        }
    }
    s
}

/// Open connections, the configuration's state and the certificate's
/// expiry.
pub(super) fn health(ctx: &State) -> String {
    let d = &ctx.discovery;
    let expiry = ctx
        .pod
        .identity
        .credentials()
        .and_then(|c| c.info.not_after.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |t| t.as_secs());
    let version = d.version().replace(['"', '\\', '\n'], "_");
    format!(
        "# HELP mesh_proxy_connections_open Connections the proxy holds open (inbound and outbound).
# TYPE mesh_proxy_connections_open gauge
mesh_proxy_connections_open {}
# HELP mesh_proxy_controller_connected Whether the discovery stream to the controller is up.
# TYPE mesh_proxy_controller_connected gauge
mesh_proxy_controller_connected {}
# HELP mesh_proxy_config_synced Whether the proxy has applied a configuration from the controller.
# TYPE mesh_proxy_config_synced gauge
mesh_proxy_config_synced {}
# HELP mesh_proxy_config_info The controller's version of the configuration applied last.
# TYPE mesh_proxy_config_info gauge
mesh_proxy_config_info{{version=\"{version}\"}} 1
# HELP mesh_proxy_certificate_expiration_timestamp_seconds When the workload certificate expires (0: none yet).
# TYPE mesh_proxy_certificate_expiration_timestamp_seconds gauge
mesh_proxy_certificate_expiration_timestamp_seconds {expiry}
",
        ctx.drain.open(),
        u8::from(d.connected()),
        u8::from(d.synced_once()),
    )
}
