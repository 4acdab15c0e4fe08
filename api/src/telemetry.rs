//! Telemetry resources compiled for one workload's proxy, merged as Istio
//! merges them: the root namespace's (without a selector), then its own
//! namespace's (without one), then those whose selector matches it; the
//! more specific wins field by field (a tracing's sampling, provider and
//! span reporting each; access logging per side; metric overrides are
//! applied in that order, a later one winning for the same tag).
//! Tracing providers come from the mesh configuration's
//! `extensionProviders` (`opentelemetry`), or `defaultProviders.tracing`
//! when a Telemetry names none.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::istio::Resource;
use crate::istio::mesh_config::{MeshSettings, OpenTelemetry};
use crate::istio::telemetry::{TelemetrySpec, TracingSelector};
use crate::proto::{
    AccessLogPolicy, MetricOverride, TagOverride, TelemetryPolicy, TraceProvider, TracingPolicy,
};

pub mod expr;

/// Istio's default sampling, in percent, when nothing sets one.
pub const DEFAULT_SAMPLING: f64 = 1.0;

/// Istio's default `maxTagLength`.
const MAX_TAG_LENGTH: u32 = 256;

/// The OTLP/HTTP path when `http.path` is not given.
pub const OTLP_HTTP_PATH: &str = "/v1/traces";

/// The sides a `match.mode` covers: (client, server).
fn sides(mode: Option<&str>) -> (bool, bool) {
    match mode {
        Some("CLIENT") => (true, false),
        Some("SERVER") => (false, true),
        _ => (true, true),
    }
}

fn mode(m: &TracingSelector) -> Option<&str> {
    m.mode.as_deref()
}

/// The Telemetry resources that apply to a pod of `namespace` labelled
/// `labels`, most general first.
pub fn applying<'a>(
    all: &'a [Resource<TelemetrySpec>],
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<&'a Resource<TelemetrySpec>> {
    let targeted = |t: &Resource<TelemetrySpec>| {
        t.spec.target_ref.is_some() || t.spec.target_refs.as_ref().is_some_and(|r| !r.is_empty())
    };
    let selects = |t: &Resource<TelemetrySpec>| {
        t.spec
            .selector
            .as_ref()
            .and_then(|s| s.match_labels.as_ref())
            .map(|m| crate::cluster::labels_match(m, labels))
    };
    let mut levels: [Vec<&Resource<TelemetrySpec>>; 3] = Default::default();
    for t in all.iter().filter(|t| !targeted(t)) {
        let ns = t.namespace();
        let level = match selects(t) {
            None if crate::istio::ROOT_NAMESPACES.contains(&ns) && ns != namespace => 0,
            None if ns == namespace => 1,
            Some(true) if ns == namespace => 2,
            _ => continue,
        };
        levels[level].push(t);
    }
    levels
        .into_iter()
        .flat_map(|mut l| {
            l.sort_by_key(|t| t.address());
            l
        })
        .collect()
}

fn provider(name: &str, mesh: &MeshSettings) -> TraceProvider {
    let error = |e: String| TraceProvider {
        name: name.to_string(),
        error: e,
        ..TraceProvider::default()
    };
    let Some(p) = mesh.extension_providers.iter().find(|p| p.name == name) else {
        return error(format!(
            "provider {name:?} is not among the mesh configuration's extensionProviders"
        ));
    };
    match &p.opentelemetry {
        Some(o) => otlp(name, o),
        None => error(format!(
            "provider {name:?} is not an opentelemetry provider, the only tracing kind supported"
        )),
    }
}

fn otlp(name: &str, o: &OpenTelemetry) -> TraceProvider {
    let service = o.service.as_deref().unwrap_or_default();
    let host = crate::istio::mesh_config::service_host(service);
    let timeout = o
        .http
        .as_ref()
        .and_then(|h| h.timeout.as_deref())
        .or(o.grpc.as_ref().and_then(|g| g.timeout.as_deref()))
        .and_then(|t| crate::duration::parse(t).ok())
        .unwrap_or(Duration::from_secs(5));
    let headers = o
        .http
        .as_ref()
        .and_then(|h| h.headers.as_ref())
        .or(o.grpc.as_ref().and_then(|g| g.initial_metadata.as_ref()))
        .into_iter()
        .flatten()
        .map(|h| (h.name.to_ascii_lowercase(), h.value.clone()))
        .collect();
    TraceProvider {
        name: name.to_string(),
        error: String::new(),
        host: host.to_string(),
        port: o.port.unwrap_or_default(),
        http: o.http.is_some(),
        path: o
            .http
            .as_ref()
            .and_then(|h| h.path.clone())
            .map(|p| {
                if p.starts_with('/') {
                    p
                } else {
                    format!("/{p}")
                }
            })
            .unwrap_or_else(|| OTLP_HTTP_PATH.to_string()),
        timeout: Some(crate::routing::wire_duration(timeout)),
        headers,
        max_tag_length: o.max_tag_length.unwrap_or(MAX_TAG_LENGTH),
    }
}

/// Tracing merged from `ts`; `None` when no provider applies.
fn tracing(ts: &[&Resource<TelemetrySpec>], mesh: &MeshSettings) -> Option<TracingPolicy> {
    let mut provider_name = mesh
        .default_providers
        .as_ref()
        .and_then(|d| d.tracing.first().cloned());
    let mut sampling = DEFAULT_SAMPLING;
    let (mut client, mut server) = (true, true);
    let mut tags = BTreeMap::new();
    for t in ts.iter().flat_map(|t| t.spec.tracing.iter().flatten()) {
        if let Some(p) = t.providers.iter().flatten().find_map(|p| p.name.clone()) {
            provider_name = Some(p);
        }
        if let Some(s) = t.random_sampling_percentage {
            sampling = s;
        }
        if let Some(off) = t.disable_span_reporting {
            let (c, s) = sides(t.r#match.as_ref().and_then(mode));
            if c {
                client = !off;
            }
            if s {
                server = !off;
            }
        }
        for (name, tag) in t.custom_tags.iter().flatten() {
            let value = if let Some(l) = &tag.literal {
                format!("literal:{}", l.value.as_deref().unwrap_or_default())
            } else if let Some(e) = &tag.environment {
                format!(
                    "env:{}={}",
                    e.name.as_deref().unwrap_or_default(),
                    e.default_value.as_deref().unwrap_or_default()
                )
            } else if let Some(h) = &tag.header {
                format!(
                    "header:{}={}",
                    h.name.as_deref().unwrap_or_default().to_ascii_lowercase(),
                    h.default_value.as_deref().unwrap_or_default()
                )
            } else {
                continue;
            };
            tags.insert(name.clone(), value);
        }
    }
    let name = provider_name?;
    Some(TracingPolicy {
        sampling,
        client,
        server,
        provider: Some(provider(&name, mesh)),
        tags,
    })
}

/// Access logging merged from `ts`; `None` when none of them says.
fn access_log(ts: &[&Resource<TelemetrySpec>]) -> Option<AccessLogPolicy> {
    let mut out: Option<AccessLogPolicy> = None;
    for a in ts
        .iter()
        .flat_map(|t| t.spec.access_logging.iter().flatten())
    {
        let p = out.get_or_insert_with(|| AccessLogPolicy {
            client: false,
            server: false,
            filter: String::new(),
        });
        let on = !a.disabled.unwrap_or(false);
        let (c, s) = sides(a.r#match.as_ref().and_then(mode));
        if c {
            p.client = on;
        }
        if s {
            p.server = on;
        }
        if let Some(f) = a.filter.as_ref().and_then(|f| f.expression.clone()) {
            p.filter = f;
        }
    }
    out
}

/// Metric overrides from `ts`, in the order they apply.
fn metrics(ts: &[&Resource<TelemetrySpec>]) -> Vec<MetricOverride> {
    let mut out = Vec::new();
    for o in ts
        .iter()
        .flat_map(|t| t.spec.metrics.iter().flatten())
        .flat_map(|m| m.overrides.iter().flatten())
    {
        let sel = o.r#match.as_ref();
        if sel.is_some_and(|s| s.custom_metric.is_some()) {
            // Custom metrics do not exist here (enforcement says so).
            continue;
        }
        let (client, server) = sides(sel.and_then(|s| s.mode.as_deref()));
        out.push(MetricOverride {
            metric: sel
                .and_then(|s| s.metric.clone())
                .unwrap_or_else(|| "ALL_METRICS".into()),
            client,
            server,
            disabled: o.disabled.unwrap_or(false),
            tags: o
                .tag_overrides
                .iter()
                .flatten()
                .map(|(name, t)| {
                    let remove = t.operation.as_deref() == Some("REMOVE");
                    let value = if remove {
                        String::new()
                    } else {
                        t.value.clone().unwrap_or_default()
                    };
                    (name.clone(), TagOverride { remove, value })
                })
                .collect(),
        });
    }
    out
}

/// The policy for a pod of `namespace` labelled `labels`; `None` when no
/// Telemetry applies and the mesh has no default tracing provider.
pub fn compile(
    all: &[Resource<TelemetrySpec>],
    mesh: &MeshSettings,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<TelemetryPolicy> {
    let ts = applying(all, namespace, labels);
    let tracing = tracing(&ts, mesh);
    if ts.is_empty() && tracing.is_none() {
        return None;
    }
    Some(TelemetryPolicy {
        sources: ts.iter().map(|t| t.address()).collect(),
        access_log: access_log(&ts),
        tracing,
        metrics: metrics(&ts),
    })
}

#[cfg(test)]
mod tests;
