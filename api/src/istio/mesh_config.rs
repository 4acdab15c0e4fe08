//! Istio's mesh configuration (`MeshConfig`), as users keep it: the `mesh`
//! key of the ConfigMap `istio` in the root namespace (`istio-system`, or
//! the mesh's own `mesh-system`). Read: `extensionProviders` with
//! `envoyExtAuthzHttp` (the provider of CUSTOM AuthorizationPolicies) or
//! `opentelemetry` (where Telemetry's tracing sends spans), and
//! `defaultProviders.tracing`.
//! Every other field and provider kind is kept as written and reported as
//! stored but not used.

use std::collections::BTreeMap;

use super::validate::Problem;

fn problem(field: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        field: field.into(),
        message: message.into(),
    }
}

/// The ConfigMap that holds the mesh configuration.
pub const CONFIG_MAP: &str = "istio";

/// Its key.
pub const KEY: &str = "mesh";

/// The parts of `MeshConfig` the mesh reads.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MeshSettings {
    /// Named providers that policies refer to.
    #[serde(default)]
    pub extension_providers: Vec<ExtensionProvider>,
    /// The providers used when a Telemetry names none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_providers: Option<DefaultProviders>,
    /// Every other field, as written.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// One extension provider.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExtensionProvider {
    /// Its name, as policies name it.
    #[serde(default)]
    pub name: String,
    /// An HTTP external authorizer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub envoy_ext_authz_http: Option<ExtAuthzHttp>,
    /// An OpenTelemetry collector (OTLP) for spans.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opentelemetry: Option<OpenTelemetry>,
    /// Any other kind (`envoyExtAuthzGrpc`, `opentelemetry`, ...), as
    /// written.
    #[serde(flatten)]
    pub other: BTreeMap<String, serde_json::Value>,
}

/// Istio's `EnvoyExternalAuthorizationHttpProvider` (its fields are
/// Istio's, documented in its API reference).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct ExtAuthzHttp {
    pub service: Option<String>,
    /// A number, or a string of one as Istio's examples write it.
    #[serde(default, deserialize_with = "port")]
    pub port: Option<u32>,
    pub timeout: Option<String>,
    pub path_prefix: Option<String>,
    pub fail_open: Option<bool>,
    pub status_on_error: Option<String>,
    pub include_request_headers_in_check: Option<Vec<String>>,
    pub include_additional_headers_in_check: Option<BTreeMap<String, String>>,
    pub include_request_body_in_check: Option<serde_json::Value>,
    pub headers_to_upstream_on_allow: Option<Vec<String>>,
    pub headers_to_downstream_on_allow: Option<Vec<String>>,
    pub headers_to_downstream_on_deny: Option<Vec<String>>,
}

/// Istio's `MeshConfig.DefaultProviders`.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct DefaultProviders {
    #[serde(default)]
    pub tracing: Vec<String>,
    #[serde(default)]
    pub metrics: Vec<String>,
    #[serde(default)]
    pub access_logging: Vec<String>,
}

/// Istio's `OpenTelemetryTracingProvider`: OTLP over gRPC, or over
/// HTTP/protobuf when `http` is set.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct OpenTelemetry {
    pub service: Option<String>,
    #[serde(default, deserialize_with = "port")]
    pub port: Option<u32>,
    pub max_tag_length: Option<u32>,
    pub http: Option<OtlpHttp>,
    pub grpc: Option<OtlpGrpc>,
    pub resource_detectors: Option<serde_json::Value>,
    pub dynatrace_sampler: Option<serde_json::Value>,
}

/// OTLP over HTTP.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct OtlpHttp {
    pub path: Option<String>,
    pub timeout: Option<String>,
    pub headers: Option<Vec<HeaderValue>>,
}

/// OTLP over gRPC.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[allow(missing_docs)]
pub struct OtlpGrpc {
    pub timeout: Option<String>,
    pub initial_metadata: Option<Vec<HeaderValue>>,
}

/// A header sent with each export.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct HeaderValue {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

fn port<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    use serde::Deserialize;
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::Null => Ok(None),
        serde_json::Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| serde::de::Error::custom("a port number")),
        serde_json::Value::String(s) => s
            .parse()
            .map(Some)
            .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a port number"))),
        _ => Err(serde::de::Error::custom("a port number")),
    }
}

/// The host of a provider's `service` (`namespace/host` names the
/// Service's namespace too; the host is enough).
pub fn service_host(service: &str) -> &str {
    service.rsplit_once('/').map_or(service, |(_, h)| h)
}

/// A provider's `service` and `port`: both required, the port in range.
fn service_and_port(
    problems: &mut Vec<Problem>,
    at: &str,
    (service, service_hint): (Option<&str>, &str),
    (port, port_hint): (Option<u32>, &str),
) {
    if service.is_none_or(str::is_empty) {
        problems.push(problem(format!("{at}.service"), service_hint));
    }
    if !port.is_some_and(|p| (1..=65535).contains(&p)) {
        problems.push(problem(format!("{at}.port"), port_hint));
    }
}

/// Whether a ConfigMap `namespace/name` is the mesh configuration.
pub fn is_mesh_config(namespace: &str, name: &str) -> bool {
    name == CONFIG_MAP && super::ROOT_NAMESPACES.contains(&namespace)
}

/// The settings of `cm` when it is the mesh configuration and valid.
pub fn from_config_map(cm: &k8s_openapi::api::core::v1::ConfigMap) -> Option<MeshSettings> {
    let ns = cm.metadata.namespace.as_deref().unwrap_or("default");
    if !is_mesh_config(ns, cm.metadata.name.as_deref().unwrap_or_default()) {
        return None;
    }
    match cm.data.as_ref().and_then(|d| d.get(KEY)) {
        Some(yaml) => parse(yaml).ok(),
        None => Some(MeshSettings::default()),
    }
}

/// Reads the `mesh` key's YAML; problems carry field paths under
/// `data.mesh`.
pub fn parse(yaml: &str) -> Result<MeshSettings, Vec<Problem>> {
    let value: serde_json::Value = serde_yaml_ng::from_str(yaml)
        .map_err(|e| vec![problem("data.mesh", format!("not YAML: {e}"))])?;
    if value.is_null() {
        return Ok(MeshSettings::default());
    }
    let settings: MeshSettings = serde_path_to_error::deserialize(value).map_err(|e| {
        vec![problem(
            format!("data.mesh.{}", e.path()),
            e.inner().to_string(),
        )]
    })?;
    let mut problems = Vec::new();
    for (i, p) in settings.extension_providers.iter().enumerate() {
        let at = format!("data.mesh.extensionProviders[{i}]");
        if p.name.is_empty() {
            problems.push(problem(format!("{at}.name"), "a provider needs a name"));
        }
        if let Some(o) = &p.opentelemetry {
            let at = format!("{at}.opentelemetry");
            service_and_port(
                &mut problems,
                &at,
                (
                    o.service.as_deref(),
                    "the collector's Service host is required (e.g. otel-collector.observability.svc.cluster.local)",
                ),
                (
                    o.port,
                    "a port between 1 and 65535 is required (4317 for gRPC, 4318 for HTTP)",
                ),
            );
            let timeouts = [
                (
                    "http.timeout",
                    o.http.as_ref().and_then(|h| h.timeout.as_ref()),
                ),
                (
                    "grpc.timeout",
                    o.grpc.as_ref().and_then(|g| g.timeout.as_ref()),
                ),
            ];
            for (field, t) in timeouts {
                if let Some(t) = t
                    && let Err(e) = crate::duration::parse(t)
                {
                    problems.push(problem(format!("{at}.{field}"), e.to_string()));
                }
            }
        }
        if let Some(h) = &p.envoy_ext_authz_http {
            let at = format!("{at}.envoyExtAuthzHttp");
            service_and_port(
                &mut problems,
                &at,
                (
                    h.service.as_deref(),
                    "the authorizer's Service host is required (e.g. ext-authz.foo.svc.cluster.local)",
                ),
                (h.port, "a port between 1 and 65535 is required"),
            );
            if let Some(t) = &h.timeout
                && let Err(e) = crate::duration::parse(t)
            {
                problems.push(problem(format!("{at}.timeout"), e.to_string()));
            }
            if let Some(s) = &h.status_on_error
                && !s.parse::<u16>().is_ok_and(|c| (200..600).contains(&c))
            {
                problems.push(problem(
                    format!("{at}.statusOnError"),
                    "an HTTP status code, e.g. \"403\"",
                ));
            }
        }
    }
    let mut names: Vec<&str> = settings
        .extension_providers
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    names.sort_unstable();
    if let Some(w) = names.windows(2).find(|w| w[0] == w[1] && !w[0].is_empty()) {
        problems.push(problem(
            "data.mesh.extensionProviders",
            format!("provider name {:?} is used twice", w[0]),
        ));
    }
    if problems.is_empty() {
        Ok(settings)
    } else {
        Err(problems)
    }
}

/// What of `settings` is stored and not acted on: (field path, note).
pub fn not_used(settings: &MeshSettings) -> Vec<(String, &'static str)> {
    let mut out: Vec<(String, &'static str)> = settings
        .other
        .keys()
        .map(|k| {
            (
                format!("data.mesh.{k}"),
                "stored but not used: only extensionProviders and defaultProviders are read",
            )
        })
        .collect();
    if let Some(d) = &settings.default_providers {
        for (field, set) in [
            ("metrics", !d.metrics.is_empty()),
            ("accessLogging", !d.access_logging.is_empty()),
        ] {
            if set {
                out.push((
                    format!("data.mesh.defaultProviders.{field}"),
                    "stored but not used: metrics are always served for Prometheus, and the access log follows MESH_ACCESS_LOG and Telemetry",
                ));
            }
        }
    }
    for (i, p) in settings.extension_providers.iter().enumerate() {
        for k in p.other.keys() {
            out.push((
                format!("data.mesh.extensionProviders[{i}].{k}"),
                "this provider kind is not supported yet: CUSTOM policies naming it deny the requests they match, and Telemetry naming it for tracing sends no spans",
            ));
        }
        if let Some(o) = &p.opentelemetry {
            for (field, set) in [
                ("resourceDetectors", o.resource_detectors.is_some()),
                ("dynatraceSampler", o.dynatrace_sampler.is_some()),
            ] {
                if set {
                    out.push((
                        format!("data.mesh.extensionProviders[{i}].opentelemetry.{field}"),
                        "stored but not used yet",
                    ));
                }
            }
        }
        if p.envoy_ext_authz_http
            .as_ref()
            .is_some_and(|h| h.include_request_body_in_check.is_some())
        {
            out.push((
                format!(
                    "data.mesh.extensionProviders[{i}].envoyExtAuthzHttp.includeRequestBodyInCheck"
                ),
                "stored but not enforced yet: the check request carries no body",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests;
