//! Istio's local rate limit as users write it: the widespread EnvoyFilter
//! that inserts `envoy.filters.http.local_ratelimit` into the sidecar's
//! inbound HTTP filters, read into the native LocalRateLimit (of the same
//! name and namespace, marked with [`TRANSLATED_FROM`]). Any other
//! EnvoyFilter is refused with a pointer to the native resource.

use serde_json::Value;

use super::{LocalRateLimitSpec, TokenBucket};
use crate::istio::Resource;
use crate::istio::shared::WorkloadSelector;

/// The annotation a translated LocalRateLimit carries: `EnvoyFilter
/// <namespace>/<name>`.
pub const TRANSLATED_FROM: &str = "policy.mesh.io/translated-from";

const FILTER: &str = "envoy.filters.http.local_ratelimit";
const TYPE_URL: &str =
    "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit";
const TYPED_STRUCT: &str = "type.googleapis.com/udpa.type.v1.TypedStruct";
const XDS_TYPED_STRUCT: &str = "type.googleapis.com/xds.type.v3.TypedStruct";

/// What is refused: (field path, message).
pub type Refusal = (String, String);

fn refuse(at: impl Into<String>, m: impl Into<String>) -> Refusal {
    (at.into(), m.into())
}

const ONLY: &str = "only the EnvoyFilter that inserts envoy.filters.http.local_ratelimit in SIDECAR_INBOUND is read; for anything else use the native resource (policy.mesh.io/v1alpha1 LocalRateLimit for rate limits)";

fn text<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Value::as_str)
}

/// An Envoy duration: `"60s"`, `"0.5s"`, or `{seconds, nanos}`.
fn duration(v: &Value, at: &str) -> Result<String, Refusal> {
    match v {
        Value::String(s) => crate::duration::parse(s)
            .map(|_| s.clone())
            .map_err(|e| refuse(at, e.to_string())),
        Value::Object(_) => {
            let secs = v.get("seconds").and_then(Value::as_u64).unwrap_or(0);
            let nanos = v.get("nanos").and_then(Value::as_u64).unwrap_or(0);
            Ok(format!("{}ms", secs * 1000 + nanos / 1_000_000))
        }
        _ => Err(refuse(at, "a duration such as 60s")),
    }
}

/// A runtime fraction that must be 100%.
fn whole(v: Option<&Value>, at: &str) -> Result<(), Refusal> {
    let Some(d) = v.and_then(|f| f.get("default_value")) else {
        return Ok(());
    };
    let numerator = d.get("numerator").and_then(Value::as_u64).unwrap_or(0);
    let denominator = match text(d, "denominator").unwrap_or("HUNDRED") {
        "HUNDRED" => 100,
        "TEN_THOUSAND" => 10_000,
        "MILLION" => 1_000_000,
        other => {
            return Err(refuse(
                format!("{at}.default_value.denominator"),
                format!("unknown {other:?}"),
            ));
        }
    };
    if numerator == denominator {
        Ok(())
    } else {
        Err(refuse(
            format!("{at}.default_value"),
            format!(
                "{numerator}/{denominator}: only 100% is supported (the mesh limits every request or none)"
            ),
        ))
    }
}

/// The LocalRateLimit `ef` (an EnvoyFilter document) stands for.
pub fn translate(ef: &Value) -> Result<Resource<LocalRateLimitSpec>, Refusal> {
    let spec = ef
        .get("spec")
        .ok_or_else(|| refuse("spec", format!("required: {ONLY}")))?;
    let patches = spec
        .get("configPatches")
        .and_then(Value::as_array)
        .filter(|p| p.len() == 1)
        .ok_or_else(|| refuse("spec.configPatches", format!("exactly one patch: {ONLY}")))?;
    let at = "spec.configPatches[0]";
    let patch = &patches[0];
    if text(patch, "applyTo") != Some("HTTP_FILTER") {
        return Err(refuse(
            format!("{at}.applyTo"),
            format!("HTTP_FILTER expected: {ONLY}"),
        ));
    }
    let context = patch.pointer("/match/context").and_then(Value::as_str);
    if context != Some("SIDECAR_INBOUND") {
        return Err(refuse(
            format!("{at}.match.context"),
            format!("SIDECAR_INBOUND expected: {ONLY}"),
        ));
    }
    let value = patch
        .pointer("/patch/value")
        .ok_or_else(|| refuse(format!("{at}.patch.value"), "required"))?;
    let vat = format!("{at}.patch.value");
    if text(value, "name") != Some(FILTER) {
        return Err(refuse(
            format!("{vat}.name"),
            format!("{FILTER} expected: {ONLY}"),
        ));
    }
    let typed = value
        .get("typed_config")
        .ok_or_else(|| refuse(format!("{vat}.typed_config"), "required"))?;
    let (config, cat) = match text(typed, "@type") {
        Some(TYPE_URL) => (typed, format!("{vat}.typed_config")),
        Some(TYPED_STRUCT | XDS_TYPED_STRUCT) if text(typed, "type_url") == Some(TYPE_URL) => (
            typed.get("value").unwrap_or(&Value::Null),
            format!("{vat}.typed_config.value"),
        ),
        _ => {
            return Err(refuse(
                format!("{vat}.typed_config"),
                format!("a {TYPE_URL} (directly, or in a TypedStruct) expected"),
            ));
        }
    };
    for unsupported in [
        "descriptors",
        "local_rate_limit_per_downstream_connection",
        "request_headers_to_add_when_not_enforced",
        "response_headers_to_add",
    ] {
        if config.get(unsupported).is_some() {
            return Err(refuse(
                format!("{cat}.{unsupported}"),
                "not supported: use policy.mesh.io/v1alpha1 LocalRateLimit routes for per-route buckets",
            ));
        }
    }
    whole(
        config.get("filter_enabled"),
        &format!("{cat}.filter_enabled"),
    )?;
    whole(
        config.get("filter_enforced"),
        &format!("{cat}.filter_enforced"),
    )?;
    let b = config
        .get("token_bucket")
        .ok_or_else(|| refuse(format!("{cat}.token_bucket"), "required"))?;
    let bat = format!("{cat}.token_bucket");
    let number = |k: &str| {
        b.get(k)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
    };
    let max_tokens = number("max_tokens")
        .ok_or_else(|| refuse(format!("{bat}.max_tokens"), "required, a number"))?;
    let fill = b
        .get("fill_interval")
        .ok_or_else(|| refuse(format!("{bat}.fill_interval"), "required, e.g. 60s"))?;
    let fill_interval = duration(fill, &format!("{bat}.fill_interval"))?;
    let status_code = config
        .pointer("/status/code")
        .and_then(|c| c.as_u64().or_else(|| c.as_str().and_then(status_name)))
        .and_then(|c| u32::try_from(c).ok());
    let meta = ef.get("metadata").cloned().unwrap_or(Value::Null);
    let name = text(&meta, "name").unwrap_or_default().to_string();
    let namespace = text(&meta, "namespace").map(str::to_string);
    let labels = spec
        .pointer("/workloadSelector/labels")
        .and_then(|l| serde_json::from_value(l.clone()).ok());
    let mut annotations = std::collections::BTreeMap::new();
    annotations.insert(
        TRANSLATED_FROM.to_string(),
        format!(
            "EnvoyFilter {}/{name}",
            namespace.as_deref().unwrap_or("default")
        ),
    );
    Ok(Resource {
        api_version: "policy.mesh.io/v1alpha1".into(),
        kind: "LocalRateLimit".into(),
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name),
            namespace,
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: LocalRateLimitSpec {
            selector: labels.map(|l| WorkloadSelector {
                match_labels: Some(l),
            }),
            token_bucket: Some(TokenBucket {
                max_tokens: Some(max_tokens),
                tokens_per_fill: number("tokens_per_fill"),
                fill_interval: Some(fill_interval),
            }),
            status_code,
            routes: None,
        },
        status: None,
    })
}

/// Envoy's `StatusCode` enum names that local rate limits use.
fn status_name(s: &str) -> Option<u64> {
    match s {
        "TooManyRequests" => Some(429),
        "ServiceUnavailable" => Some(503),
        "Forbidden" => Some(403),
        _ => None,
    }
}

/// The warning a translated LocalRateLimit carries.
pub fn note(rl: &Resource<LocalRateLimitSpec>) -> Option<String> {
    let from = rl.metadata.annotations.as_ref()?.get(TRANSLATED_FROM)?;
    let b = rl.spec.token_bucket.as_ref()?;
    Some(format!(
        "{from} read as policy.mesh.io/v1alpha1 LocalRateLimit: {} tokens, {} per {}, for every request of the selected workloads (filter_enforced is taken as 100%; write the LocalRateLimit itself to silence this)",
        b.max_tokens.unwrap_or(0),
        b.tokens_per_fill.unwrap_or(1),
        b.fill_interval.as_deref().unwrap_or("?")
    ))
}
