//! Istio's resources, with the field names of Istio's API so that existing
//! YAML reads unchanged. Fields are optional as in Istio's protobuf; enums
//! are kept as their text and checked by validation, so that a value reads
//! back exactly as written.

pub mod destination_rule;
pub mod mesh_config;
pub mod security;
pub mod service_entry;
pub mod shared;
pub mod telemetry;
pub mod validate;
pub mod virtual_service;

#[cfg(test)]
mod tests;

/// Declares an Istio message: every field optional, camelCase, unknown
/// fields rejected (validation turns that into "did you mean").
macro_rules! message {
    ($(#[$m:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize, schemars::JsonSchema)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        #[allow(missing_docs)] // Fields are Istio's, documented in its API reference.
        pub struct $name {
            $(
                #[serde(default, skip_serializing_if = "Option::is_none")]
                pub $field: Option<$ty>,
            )*
        }

        #[cfg(test)]
        impl $crate::sample::Sample for $name {
            fn sample(rng: &mut fastrand::Rng, depth: u32) -> Self {
                Self { $($field: $crate::sample::Sample::sample(rng, depth + 1),)* }
            }
        }
    };
}
pub(crate) use message;

/// The `networking.istio.io` versions served.
pub const NETWORKING_VERSIONS: &[&str] = &[
    "networking.istio.io/v1alpha3",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1",
];

/// The `security.istio.io` versions served.
pub const SECURITY_VERSIONS: &[&str] = &["security.istio.io/v1beta1", "security.istio.io/v1"];

/// The `telemetry.istio.io` versions served.
pub const TELEMETRY_VERSIONS: &[&str] = &["telemetry.istio.io/v1alpha1", "telemetry.istio.io/v1"];

/// The namespaces whose selector-less policies (Sidecar, PeerAuthentication,
/// AuthorizationPolicy) are mesh-wide: Istio's root namespace, and ours.
pub const ROOT_NAMESPACES: &[&str] = &["istio-system", "mesh-system"];

/// A namespaced Istio object: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resource<S> {
    /// e.g. `networking.istio.io/v1`.
    pub api_version: String,
    /// e.g. `VirtualService`.
    pub kind: String,
    /// Name, namespace, labels, annotations.
    pub metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    /// The spec.
    #[serde(default)]
    pub spec: S,
    /// Written by the control plane; kept as is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

impl<S> Resource<S> {
    /// Its namespace (`default` when unset).
    pub fn namespace(&self) -> &str {
        self.metadata.namespace.as_deref().unwrap_or("default")
    }

    /// Its name.
    pub fn name(&self) -> &str {
        self.metadata.name.as_deref().unwrap_or_default()
    }

    /// `namespace/name`.
    pub fn address(&self) -> String {
        format!("{}/{}", self.namespace(), self.name())
    }
}
