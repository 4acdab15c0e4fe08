//! Reading Kubernetes manifests: multi-document YAML into typed objects,
//! each error naming the file, the document, the object and the field path.
//!
//! A bad document is reported alone; the others are still returned.

use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Service, ServiceAccount};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

use crate::istio::Resource;
use crate::istio::destination_rule::DestinationRuleSpec;
use crate::istio::security::{
    AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec,
};
use crate::istio::service_entry::{ServiceEntrySpec, SidecarSpec, WorkloadEntrySpec};
use crate::istio::telemetry::TelemetrySpec;
use crate::istio::virtual_service::VirtualServiceSpec;
use crate::linkerd::{ServiceProfileSpec, TrafficSplitSpec};
use crate::policy::LocalRateLimitSpec;

/// The kinds read, each with the API versions served.
pub const SUPPORTED_KINDS: &[(&str, &[&str])] = &[
    ("Namespace", &["v1"]),
    ("ServiceAccount", &["v1"]),
    ("Deployment", &["apps/v1"]),
    ("Service", &["v1"]),
    ("ConfigMap", &["v1"]),
    ("VirtualService", crate::istio::NETWORKING_VERSIONS),
    ("DestinationRule", crate::istio::NETWORKING_VERSIONS),
    ("ServiceEntry", crate::istio::NETWORKING_VERSIONS),
    ("WorkloadEntry", crate::istio::NETWORKING_VERSIONS),
    ("Sidecar", crate::istio::NETWORKING_VERSIONS),
    ("PeerAuthentication", crate::istio::SECURITY_VERSIONS),
    ("AuthorizationPolicy", crate::istio::SECURITY_VERSIONS),
    ("RequestAuthentication", crate::istio::SECURITY_VERSIONS),
    ("Telemetry", crate::istio::TELEMETRY_VERSIONS),
    ("ServiceProfile", crate::linkerd::SERVICE_PROFILE_VERSIONS),
    ("TrafficSplit", crate::linkerd::TRAFFIC_SPLIT_VERSIONS),
    ("LocalRateLimit", crate::policy::POLICY_VERSIONS),
];

/// An object read from a manifest.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
#[serde(tag = "type", content = "object")]
pub enum Object {
    /// `v1/Namespace`.
    Namespace(Namespace),
    /// `v1/ServiceAccount`.
    ServiceAccount(ServiceAccount),
    /// `v1/ConfigMap`: the mesh configuration when it is `istio` in a
    /// root namespace ([`crate::istio::mesh_config`]); any other is
    /// stored.
    ConfigMap(Box<ConfigMap>),
    /// `apps/v1/Deployment`.
    Deployment(Box<Deployment>),
    /// `v1/Service`.
    Service(Box<Service>),
    /// `networking.istio.io/VirtualService`.
    VirtualService(Box<Resource<VirtualServiceSpec>>),
    /// `networking.istio.io/DestinationRule`.
    DestinationRule(Box<Resource<DestinationRuleSpec>>),
    /// `networking.istio.io/ServiceEntry`.
    ServiceEntry(Box<Resource<ServiceEntrySpec>>),
    /// `networking.istio.io/WorkloadEntry`.
    WorkloadEntry(Box<Resource<WorkloadEntrySpec>>),
    /// `networking.istio.io/Sidecar`.
    Sidecar(Box<Resource<SidecarSpec>>),
    /// `security.istio.io/PeerAuthentication`.
    PeerAuthentication(Box<Resource<PeerAuthenticationSpec>>),
    /// `security.istio.io/AuthorizationPolicy`.
    AuthorizationPolicy(Box<Resource<AuthorizationPolicySpec>>),
    /// `security.istio.io/RequestAuthentication`.
    RequestAuthentication(Box<Resource<RequestAuthenticationSpec>>),
    /// `telemetry.istio.io/Telemetry`.
    Telemetry(Box<Resource<TelemetrySpec>>),
    /// `linkerd.io/ServiceProfile`, translated into a VirtualService (and a
    /// DestinationRule for its retry budget).
    ServiceProfile(Box<Resource<ServiceProfileSpec>>),
    /// `split.smi-spec.io/TrafficSplit`, translated into a VirtualService.
    TrafficSplit(Box<Resource<TrafficSplitSpec>>),
    /// `policy.mesh.io/LocalRateLimit`.
    LocalRateLimit(Box<Resource<LocalRateLimitSpec>>),
}

impl Object {
    /// `Kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::ConfigMap(_) => "ConfigMap",
            Object::Deployment(_) => "Deployment",
            Object::Service(_) => "Service",
            Object::VirtualService(_) => "VirtualService",
            Object::DestinationRule(_) => "DestinationRule",
            Object::ServiceEntry(_) => "ServiceEntry",
            Object::WorkloadEntry(_) => "WorkloadEntry",
            Object::Sidecar(_) => "Sidecar",
            Object::PeerAuthentication(_) => "PeerAuthentication",
            Object::AuthorizationPolicy(_) => "AuthorizationPolicy",
            Object::RequestAuthentication(_) => "RequestAuthentication",
            Object::Telemetry(_) => "Telemetry",
            Object::ServiceProfile(_) => "ServiceProfile",
            Object::TrafficSplit(_) => "TrafficSplit",
            Object::LocalRateLimit(_) => "LocalRateLimit",
        }
    }

    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::ServiceAccount(o) => &o.metadata,
            Object::ConfigMap(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
            Object::VirtualService(o) => &o.metadata,
            Object::DestinationRule(o) => &o.metadata,
            Object::ServiceEntry(o) => &o.metadata,
            Object::WorkloadEntry(o) => &o.metadata,
            Object::Sidecar(o) => &o.metadata,
            Object::PeerAuthentication(o) => &o.metadata,
            Object::AuthorizationPolicy(o) => &o.metadata,
            Object::RequestAuthentication(o) => &o.metadata,
            Object::Telemetry(o) => &o.metadata,
            Object::ServiceProfile(o) => &o.metadata,
            Object::TrafficSplit(o) => &o.metadata,
            Object::LocalRateLimit(o) => &o.metadata,
        }
    }

    /// `metadata.name` (validated to be present).
    pub fn name(&self) -> &str {
        self.meta().name.as_deref().unwrap_or_default()
    }

    /// The namespace, `default` when unset; empty for a Namespace.
    pub fn namespace(&self) -> &str {
        match self {
            Object::Namespace(_) => "",
            _ => self.meta().namespace.as_deref().unwrap_or("default"),
        }
    }

    /// What the object becomes in the native model: itself, or for the
    /// Linkerd imports their translation (empty if it does not translate).
    pub fn native(&self) -> Vec<Object> {
        match self {
            Object::ServiceProfile(sp) => match crate::linkerd::translate_service_profile(sp) {
                Ok((vs, dr)) => std::iter::once(Object::VirtualService(Box::new(vs)))
                    .chain(dr.map(|d| Object::DestinationRule(Box::new(d))))
                    .collect(),
                Err(_) => Vec::new(),
            },
            Object::TrafficSplit(ts) => crate::linkerd::translate_traffic_split(ts)
                .map(|vs| vec![Object::VirtualService(Box::new(vs))])
                .unwrap_or_default(),
            other => vec![other.clone()],
        }
    }

    /// The object as its own document (`apiVersion`, `kind`, ...).
    pub fn to_document(&self) -> serde_json::Value {
        let v = match self {
            Object::Namespace(o) => serde_json::to_value(o),
            Object::ServiceAccount(o) => serde_json::to_value(o),
            Object::ConfigMap(o) => serde_json::to_value(o),
            Object::Deployment(o) => serde_json::to_value(o),
            Object::Service(o) => serde_json::to_value(o),
            Object::VirtualService(o) => serde_json::to_value(o),
            Object::DestinationRule(o) => serde_json::to_value(o),
            Object::ServiceEntry(o) => serde_json::to_value(o),
            Object::WorkloadEntry(o) => serde_json::to_value(o),
            Object::Sidecar(o) => serde_json::to_value(o),
            Object::PeerAuthentication(o) => serde_json::to_value(o),
            Object::AuthorizationPolicy(o) => serde_json::to_value(o),
            Object::RequestAuthentication(o) => serde_json::to_value(o),
            Object::Telemetry(o) => serde_json::to_value(o),
            Object::ServiceProfile(o) => serde_json::to_value(o),
            Object::TrafficSplit(o) => serde_json::to_value(o),
            Object::LocalRateLimit(o) => serde_json::to_value(o),
        };
        v.unwrap_or_default()
    }

    /// Order in which a batch is applied: what others refer to first.
    pub fn apply_rank(&self) -> u8 {
        match self {
            Object::Namespace(_) => 0,
            Object::ServiceAccount(_) => 1,
            Object::Service(_) => 2,
            Object::Deployment(_) => 3,
            _ => 4,
        }
    }
}

/// One object and where it came from.
#[derive(Clone, Debug)]
pub struct Document {
    /// 1-based position in the file.
    pub index: usize,
    /// The object.
    pub object: Object,
}

/// A rejected document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManifestError {
    /// File name (`-` for stdin).
    pub source: String,
    /// 1-based document number.
    pub document: usize,
    /// `Kind/name` when known.
    pub object: Option<String>,
    /// Field path, e.g. `spec.template.spec.containers[0].command`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.source, self.document)?;
        if let Some(o) = &self.object {
            write!(f, " {o}")?;
        }
        if self.field.is_empty() {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": {}: {}", self.field, self.message)
        }
    }
}

/// Reads every document of `text`. `source` names the file in errors.
pub fn parse(source: &str, text: &str) -> (Vec<Document>, Vec<ManifestError>) {
    let mut docs = Vec::new();
    let mut errors = Vec::new();
    for (i, de) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        let index = i + 1;
        let err = |field: &str, message: String| ManifestError {
            source: source.to_string(),
            document: index,
            object: None,
            field: field.to_string(),
            message,
        };
        let value = match <Value as serde::Deserialize>::deserialize(de) {
            Ok(v) => v,
            Err(e) => {
                errors.push(err("", format!("malformed YAML: {e}")));
                // The parser cannot resynchronise after a syntax error.
                break;
            }
        };
        if value.is_null() {
            continue;
        }
        match read_object(value) {
            Ok(object) => {
                let problems = validate::object(&object, validate::For::Files);
                let at = address(&object);
                if problems.is_empty() {
                    docs.push(Document { index, object });
                }
                for (field, message) in problems {
                    errors.push(ManifestError {
                        object: Some(at.clone()),
                        ..err(&field, message)
                    });
                }
            }
            Err((object, field, message)) => errors.push(ManifestError {
                object,
                ..err(&field, message)
            }),
        }
    }
    (docs, errors)
}

/// Reads one object as a cluster returns it (JSON), with the checks of
/// [`parse`] but the local runtime's own (a container's `command`, env
/// values only, ClusterIP Services only, matchLabels only): the problems
/// come as (field path, message).
pub fn read(value: serde_json::Value) -> Result<Object, Vec<(String, String)>> {
    let value: Value =
        serde_json::from_value(value).map_err(|e| vec![(String::new(), e.to_string())])?;
    let object = read_object(value).map_err(|(_, field, message)| vec![(field, message)])?;
    let problems = validate::object(&object, validate::For::Cluster);
    if problems.is_empty() {
        Ok(object)
    } else {
        Err(problems)
    }
}

/// `Kind/name`, as errors address objects.
pub fn address(o: &Object) -> String {
    format!("{}/{}", o.kind(), o.name())
}

/// `Kind ns/name` (or `Kind name` for cluster-scoped kinds).
pub fn describe(o: &Object) -> String {
    if o.namespace().is_empty() {
        format!("{} {}", o.kind(), o.name())
    } else {
        format!("{} {}/{}", o.kind(), o.namespace(), o.name())
    }
}

type ReadError = (Option<String>, String, String);

fn read_object(value: Value) -> Result<Object, ReadError> {
    let Value::Mapping(map) = &value else {
        return Err((
            None,
            String::new(),
            "expected a mapping with apiVersion and kind".into(),
        ));
    };
    let text = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_string);
    let api_version = text("apiVersion").ok_or((None, "apiVersion".into(), "required".into()))?;
    let kind = text("kind").ok_or((None, "kind".into(), "required".into()))?;
    let name = map
        .get("metadata")
        .and_then(|m| m.get("name"))
        .and_then(Value::as_str)
        .map(|n| format!("{kind}/{n}"));
    let kinds: Vec<&str> = SUPPORTED_KINDS.iter().map(|(k, _)| *k).collect();
    match SUPPORTED_KINDS.iter().find(|(k, _)| *k == kind) {
        None if kind == "EnvoyFilter" => {
            // Read as the LocalRateLimit it stands for, or refused.
            let json = serde_json::to_value(&value)
                .map_err(|e| (name.clone(), String::new(), e.to_string()))?;
            return crate::policy::envoy_filter::translate(&json)
                .map(|rl| Object::LocalRateLimit(Box::new(rl)))
                .map_err(|(field, m)| {
                    (
                        name,
                        field,
                        format!("EnvoyFilter is not supported here: {m}"),
                    )
                });
        }
        None => {
            let hint = crate::istio::validate::did_you_mean(&kind, &kinds)
                .map(|k| format!("did you mean {k:?}? "))
                .unwrap_or_default();
            return Err((
                name,
                "kind".into(),
                format!(
                    "unknown kind {kind:?}; {hint}supported: {}",
                    kinds.join(", ")
                ),
            ));
        }
        Some((_, versions)) if !versions.contains(&api_version.as_str()) => {
            return Err((
                name,
                "apiVersion".into(),
                format!(
                    "{kind} is served as {}, not {api_version:?}",
                    versions.join(", ")
                ),
            ));
        }
        Some(_) => {}
    }
    let typed = |e: (String, String)| (name.clone(), e.0, e.1);
    Ok(match kind.as_str() {
        "Namespace" => Object::Namespace(typed_from(value).map_err(typed)?),
        "ServiceAccount" => Object::ServiceAccount(typed_from(value).map_err(typed)?),
        "Deployment" => Object::Deployment(Box::new(typed_from(value).map_err(typed)?)),
        "ConfigMap" => Object::ConfigMap(Box::new(typed_from(value).map_err(typed)?)),
        "VirtualService" => Object::VirtualService(Box::new(typed_from(value).map_err(typed)?)),
        "DestinationRule" => Object::DestinationRule(Box::new(typed_from(value).map_err(typed)?)),
        "ServiceEntry" => Object::ServiceEntry(Box::new(typed_from(value).map_err(typed)?)),
        "WorkloadEntry" => Object::WorkloadEntry(Box::new(typed_from(value).map_err(typed)?)),
        "Sidecar" => Object::Sidecar(Box::new(typed_from(value).map_err(typed)?)),
        "ServiceProfile" => Object::ServiceProfile(Box::new(typed_from(value).map_err(typed)?)),
        "TrafficSplit" => Object::TrafficSplit(Box::new(typed_from(value).map_err(typed)?)),
        "LocalRateLimit" => Object::LocalRateLimit(Box::new(typed_from(value).map_err(typed)?)),
        "PeerAuthentication" => {
            Object::PeerAuthentication(Box::new(typed_from(value).map_err(typed)?))
        }
        "AuthorizationPolicy" => {
            Object::AuthorizationPolicy(Box::new(typed_from(value).map_err(typed)?))
        }
        "RequestAuthentication" => {
            Object::RequestAuthentication(Box::new(typed_from(value).map_err(typed)?))
        }
        "Telemetry" => Object::Telemetry(Box::new(typed_from(value).map_err(typed)?)),
        _ => Object::Service(Box::new(typed_from(value).map_err(typed)?)),
    })
}

fn typed_from<T: DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        let message = e.into_inner().to_string();
        // An unknown field: point at it, and suggest the closest known one.
        match crate::istio::validate::unknown_field(&message) {
            Some((name, msg)) if path.is_empty() => (name, msg),
            Some((name, msg)) if !path.ends_with(&name) => (format!("{path}.{name}"), msg),
            Some((_, msg)) => (path, msg),
            None => (path, message),
        }
    })
}

mod validate;

pub use validate::is_dns_label;

#[cfg(test)]
mod tests;
