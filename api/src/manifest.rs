//! Reading Kubernetes manifests: multi-document YAML into typed objects,
//! each error naming the file, the document, the object and the field path.
//!
//! A bad document is reported alone; the others are still returned.

use std::fmt;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Service, ServiceAccount};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_yaml_ng::Value;

/// The kinds the local runtime runs.
pub const SUPPORTED_KINDS: &[(&str, &str)] = &[
    ("v1", "Namespace"),
    ("v1", "ServiceAccount"),
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
];

/// An object read from a manifest.
#[derive(Clone, Debug, Serialize, serde::Deserialize, PartialEq)]
#[serde(tag = "type", content = "object")]
pub enum Object {
    /// `v1/Namespace`.
    Namespace(Namespace),
    /// `v1/ServiceAccount`.
    ServiceAccount(ServiceAccount),
    /// `apps/v1/Deployment`.
    Deployment(Box<Deployment>),
    /// `v1/Service`.
    Service(Box<Service>),
}

impl Object {
    /// `Kind`.
    pub fn kind(&self) -> &'static str {
        match self {
            Object::Namespace(_) => "Namespace",
            Object::ServiceAccount(_) => "ServiceAccount",
            Object::Deployment(_) => "Deployment",
            Object::Service(_) => "Service",
        }
    }

    fn meta(&self) -> &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        match self {
            Object::Namespace(o) => &o.metadata,
            Object::ServiceAccount(o) => &o.metadata,
            Object::Deployment(o) => &o.metadata,
            Object::Service(o) => &o.metadata,
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

    /// Order in which a batch is applied: what others refer to first.
    pub fn apply_rank(&self) -> u8 {
        match self {
            Object::Namespace(_) => 0,
            Object::ServiceAccount(_) => 1,
            Object::Service(_) => 2,
            Object::Deployment(_) => 3,
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
    /// `Kind/name` or `Kind ns/name` when known.
    pub object: Option<String>,
    /// Field path, e.g. `spec.template.spec.containers[0].command`.
    pub field: String,
    /// What is wrong and what to do.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.source, self.document)?;
        if let Some(o) = &self.object {
            write!(f, " ({o})")?;
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
            Ok(object) => match validate::object(&object) {
                Ok(()) => docs.push(Document { index, object }),
                Err((field, message)) => errors.push(ManifestError {
                    object: Some(describe(&object)),
                    ..err(&field, message)
                }),
            },
            Err((object, field, message)) => errors.push(ManifestError {
                object,
                ..err(&field, message)
            }),
        }
    }
    (docs, errors)
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
        .map(|n| format!("{kind} {n}"));
    let supported = SUPPORTED_KINDS
        .iter()
        .map(|(v, k)| format!("{v}/{k}"))
        .collect::<Vec<_>>()
        .join(", ");
    let expected = SUPPORTED_KINDS.iter().find(|(_, k)| *k == kind);
    match expected {
        None => {
            return Err((
                name,
                "kind".into(),
                format!("unknown kind {kind:?}; supported: {supported}"),
            ));
        }
        Some((v, _)) if *v != api_version => {
            return Err((
                name,
                "apiVersion".into(),
                format!("{kind} is served as {v:?}, not {api_version:?}"),
            ));
        }
        Some(_) => {}
    }
    let typed = |e: (String, String)| (name.clone(), e.0, e.1);
    Ok(match kind.as_str() {
        "Namespace" => Object::Namespace(typed_from(value).map_err(typed)?),
        "ServiceAccount" => Object::ServiceAccount(typed_from(value).map_err(typed)?),
        "Deployment" => Object::Deployment(Box::new(typed_from(value).map_err(typed)?)),
        _ => Object::Service(Box::new(typed_from(value).map_err(typed)?)),
    })
}

fn typed_from<T: DeserializeOwned>(value: Value) -> Result<T, (String, String)> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        (path, e.into_inner().to_string())
    })
}

mod validate;

#[cfg(test)]
mod tests;
