//! The HTTP external authorizers that a workload's CUSTOM policies name,
//! resolved from the mesh configuration's `extensionProviders` for its
//! proxy, with Istio's defaults (600 s timeout, 403 on error, fail
//! closed).

use std::time::Duration;

use crate::istio::mesh_config::{ExtAuthzHttp, MeshSettings};
use crate::proto::{AuthzAction, AuthzPolicy, ExtAuthz};

/// Istio's default for `timeout`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

fn lower(v: &Option<Vec<String>>) -> Vec<String> {
    v.iter().flatten().map(|h| h.to_ascii_lowercase()).collect()
}

fn http(name: &str, h: &ExtAuthzHttp) -> ExtAuthz {
    let service = h.service.as_deref().unwrap_or_default();
    let host = crate::istio::mesh_config::service_host(service);
    let timeout = h
        .timeout
        .as_deref()
        .and_then(|t| crate::duration::parse(t).ok())
        .unwrap_or(DEFAULT_TIMEOUT);
    ExtAuthz {
        name: name.to_string(),
        error: String::new(),
        host: host.to_string(),
        port: h.port.unwrap_or_default(),
        timeout: Some(crate::routing::wire_duration(timeout)),
        path_prefix: h.path_prefix.clone().unwrap_or_default(),
        fail_open: h.fail_open.unwrap_or(false),
        status_on_error: h
            .status_on_error
            .as_deref()
            .and_then(|s| s.parse().ok())
            .unwrap_or(403),
        include_request_headers: lower(&h.include_request_headers_in_check),
        additional_headers: h
            .include_additional_headers_in_check
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect(),
        headers_to_upstream_on_allow: lower(&h.headers_to_upstream_on_allow),
        headers_to_downstream_on_allow: lower(&h.headers_to_downstream_on_allow),
        headers_to_downstream_on_deny: lower(&h.headers_to_downstream_on_deny),
    }
}

/// The providers `policies` (those of one workload) name in CUSTOM
/// policies, each once, by name.
pub fn providers(policies: &[AuthzPolicy], mesh: &MeshSettings) -> Vec<ExtAuthz> {
    let mut names: Vec<&str> = policies
        .iter()
        .filter(|p| p.action() == AuthzAction::Custom)
        .map(|p| p.provider.as_str())
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .map(|name| {
            let found = mesh.extension_providers.iter().find(|p| p.name == name);
            match found {
                Some(p) => match &p.envoy_ext_authz_http {
                    Some(h) => http(name, h),
                    None => ExtAuthz {
                        name: name.to_string(),
                        error: format!(
                            "provider {name:?} is not an envoyExtAuthzHttp provider, the only kind supported"
                        ),
                        ..ExtAuthz::default()
                    },
                },
                None => ExtAuthz {
                    name: name.to_string(),
                    error: format!(
                        "no extension provider {name:?} in the mesh configuration (ConfigMap istio, key mesh, extensionProviders)"
                    ),
                    ..ExtAuthz::default()
                },
            }
        })
        .collect()
}

/// Whether header `name` (lowercase) is one of `patterns`.
pub fn header_listed(patterns: &[String], name: &str) -> bool {
    patterns.iter().any(|p| super::string_matches(p, name))
}
