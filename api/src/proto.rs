//! Generated protobuf and gRPC code (`proto/mesh/v1`). Wire types; convert
//! them with [`crate::discovery`] before use.
#![allow(missing_docs, clippy::all, clippy::unwrap_used, clippy::expect_used)]

tonic::include_proto!("mesh.v1");

impl PeerAuth {
    /// The mode for (target) `port`: its own, else the workload's.
    pub fn mode_for(&self, port: u16) -> MtlsMode {
        self.ports
            .get(&u32::from(port))
            .and_then(|m| MtlsMode::try_from(*m).ok())
            .unwrap_or_else(|| self.mode())
    }
}

/// The mode `policy` gives `port`: PERMISSIVE without a policy.
pub fn mtls_mode(policy: Option<&PeerAuth>, port: u16) -> MtlsMode {
    policy.map_or(MtlsMode::Permissive, |p| p.mode_for(port))
}
