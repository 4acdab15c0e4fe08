//! The mesh's own kinds, for what Istio can only express with an
//! EnvoyFilter: `policy.mesh.io/v1alpha1` LocalRateLimit, a token bucket
//! per workload, optionally per route, enforced by the workload's proxy.

use std::time::Duration;

use crate::istio::message;
use crate::istio::shared::{StringMatch, WorkloadSelector};
use crate::istio::validate::Problem;

pub mod envoy_filter;

/// Versions served.
pub const POLICY_VERSIONS: &[&str] = &["policy.mesh.io/v1alpha1"];

/// Envoy's smallest fill interval; anything finer is refused there too.
pub const MIN_FILL_INTERVAL: Duration = Duration::from_millis(50);

message!(
    /// The spec of a LocalRateLimit.
    LocalRateLimitSpec { selector: WorkloadSelector, token_bucket: TokenBucket, status_code: u32, routes: Vec<RouteRateLimit> }
);

message!(
    /// A token bucket: `maxTokens` at most, `tokensPerFill` added every
    /// `fillInterval`; a request takes one token or is refused.
    TokenBucket { max_tokens: u32, tokens_per_fill: u32, fill_interval: String }
);

message!(
    /// A bucket of its own for the requests a match takes.
    RouteRateLimit { r#match: RouteMatch, token_bucket: TokenBucket }
);

message!(
    /// Which requests: a VirtualService http route by name, or uri/method.
    RouteMatch { name: String, uri: StringMatch, method: StringMatch }
);

/// Checks a LocalRateLimit spec.
pub fn validate(spec: &LocalRateLimitSpec) -> Vec<Problem> {
    let mut c = crate::istio::validate::Check::default();
    if spec.token_bucket.is_none() && spec.routes.as_ref().is_none_or(Vec::is_empty) {
        c.fail(
            "spec.tokenBucket",
            "required (or give per-route buckets in spec.routes)",
        );
    }
    if let Some(b) = &spec.token_bucket {
        bucket(&mut c, "spec.tokenBucket", b);
    }
    if let Some(code) = spec.status_code
        && !(400..=599).contains(&code)
    {
        c.fail(
            "spec.statusCode",
            format!("{code} is not an error status (400-599); the default is 429"),
        );
    }
    for (i, r) in spec.routes.iter().flatten().enumerate() {
        let at = format!("spec.routes[{i}]");
        match &r.token_bucket {
            Some(b) => bucket(&mut c, &format!("{at}.tokenBucket"), b),
            None => c.fail(format!("{at}.tokenBucket"), "required"),
        }
        match &r.r#match {
            None => c.fail(
                format!("{at}.match"),
                "required: a route name, or uri/method",
            ),
            Some(m) => {
                if m.name.is_none() && m.uri.is_none() && m.method.is_none() {
                    c.fail(format!("{at}.match"), "give name, uri or method");
                }
                if let Some(u) = &m.uri {
                    c.string_match(&format!("{at}.match.uri"), u, false);
                }
                if let Some(u) = &m.method {
                    c.string_match(&format!("{at}.match.method"), u, false);
                }
            }
        }
    }
    c.0
}

fn bucket(c: &mut crate::istio::validate::Check, at: &str, b: &TokenBucket) {
    match b.max_tokens {
        None | Some(0) => c.fail(format!("{at}.maxTokens"), "required, at least 1"),
        Some(_) => {}
    }
    if b.tokens_per_fill == Some(0) {
        c.fail(
            format!("{at}.tokensPerFill"),
            "at least 1 (the default is 1)",
        );
    }
    match b.fill_interval.as_deref().map(crate::duration::parse) {
        None => c.fail(format!("{at}.fillInterval"), "required, e.g. 1s"),
        Some(Err(e)) => c.fail(format!("{at}.fillInterval"), e.to_string()),
        Some(Ok(d)) if d < MIN_FILL_INTERVAL => {
            c.fail(
                format!("{at}.fillInterval"),
                format!("{d:?} is below the 50ms minimum"),
            );
        }
        Some(Ok(_)) => {}
    }
}

#[cfg(test)]
mod tests {
    use crate::manifest;

    #[test]
    fn reads_and_checks_local_rate_limits() {
        let good = "apiVersion: policy.mesh.io/v1alpha1\nkind: LocalRateLimit\nmetadata: {name: reviews, namespace: shop}\nspec:\n  selector: {matchLabels: {app: reviews}}\n  tokenBucket: {maxTokens: 100, tokensPerFill: 10, fillInterval: 1s}\n  statusCode: 429\n  routes:\n  - match: {name: reviews-v2}\n    tokenBucket: {maxTokens: 5, fillInterval: 100ms}\n  - match: {uri: {prefix: /api}, method: {exact: POST}}\n    tokenBucket: {maxTokens: 1, fillInterval: 1m}\n";
        let (docs, errors) = manifest::parse("rl.yaml", good);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(docs[0].object.kind(), "LocalRateLimit");
        let bad = "apiVersion: policy.mesh.io/v1alpha1\nkind: LocalRateLimit\nmetadata: {name: r}\nspec:\n  tokenBucket: {maxTokens: 0, fillInterval: 10ms}\n  statusCode: 200\n  routes: [{match: {}, tokenBucket: {maxTokens: 1, fillInterval: 1s}}]\n";
        let (_, errors) = manifest::parse("rl.yaml", bad);
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.tokenBucket.maxTokens",
                "spec.tokenBucket.fillInterval",
                "spec.statusCode",
                "spec.routes[0].match"
            ],
            "{errors:?}"
        );
        assert!(errors[1].message.contains("below the 50ms minimum"));
        let (_, errors) = manifest::parse(
            "ef.yaml",
            "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: rl}\n",
        );
        assert!(errors[0].message.contains("LocalRateLimit"), "{errors:?}");
    }

    /// The EnvoyFilter from Istio's documentation, in its TypedStruct form.
    const TYPED_STRUCT: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: local-ratelimit, namespace: production}
spec:
  workloadSelector: {labels: {app: api-service}}
  configPatches:
  - applyTo: HTTP_FILTER
    match:
      context: SIDECAR_INBOUND
      listener: {filterChain: {filter: {name: "envoy.filters.network.http_connection_manager"}}}
    patch:
      operation: INSERT_BEFORE
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/udpa.type.v1.TypedStruct
          type_url: type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          value:
            stat_prefix: http_local_rate_limiter
            token_bucket: {max_tokens: 100, tokens_per_fill: 100, fill_interval: 60s}
            filter_enabled:
              runtime_key: local_rate_limit_enabled
              default_value: {numerator: 100, denominator: HUNDRED}
"#;

    /// The same, typed directly, with filter_enforced and a status.
    const DIRECT: &str = r#"
apiVersion: networking.istio.io/v1alpha3
kind: EnvoyFilter
metadata: {name: rl, namespace: shop}
spec:
  workloadSelector: {labels: {app: web}}
  configPatches:
  - applyTo: HTTP_FILTER
    match: {context: SIDECAR_INBOUND}
    patch:
      operation: INSERT_FIRST
      value:
        name: envoy.filters.http.local_ratelimit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
          stat_prefix: rl
          status: {code: ServiceUnavailable}
          token_bucket: {max_tokens: 3, fill_interval: {seconds: 1}}
          filter_enabled: {default_value: {numerator: 100, denominator: HUNDRED}}
          filter_enforced: {default_value: {numerator: 1000000, denominator: MILLION}}
"#;

    #[test]
    fn the_local_rate_limit_envoy_filter_is_read_as_a_local_rate_limit() {
        let (docs, errors) = manifest::parse("ef.yaml", TYPED_STRUCT);
        assert!(errors.is_empty(), "{errors:?}");
        let manifest::Object::LocalRateLimit(rl) = &docs[0].object else {
            panic!("{:?}", docs[0].object)
        };
        assert_eq!(rl.metadata.name.as_deref(), Some("local-ratelimit"));
        assert_eq!(rl.metadata.namespace.as_deref(), Some("production"));
        let b = rl.spec.token_bucket.as_ref().unwrap();
        assert_eq!(
            (b.max_tokens, b.tokens_per_fill, b.fill_interval.as_deref()),
            (Some(100), Some(100), Some("60s"))
        );
        let selector = rl
            .spec
            .selector
            .as_ref()
            .unwrap()
            .match_labels
            .as_ref()
            .unwrap();
        assert_eq!(selector.get("app").map(String::as_str), Some("api-service"));
        let notes = crate::enforcement::not_enforced(&docs[0].object);
        assert!(
            notes[0].1.starts_with("EnvoyFilter production/local-ratelimit read as policy.mesh.io/v1alpha1 LocalRateLimit: 100 tokens, 100 per 60s"),
            "{notes:?}"
        );
        let (docs, errors) = manifest::parse("ef.yaml", DIRECT);
        assert!(errors.is_empty(), "{errors:?}");
        let manifest::Object::LocalRateLimit(rl) = &docs[0].object else {
            panic!()
        };
        assert_eq!(rl.spec.status_code, Some(503));
        assert_eq!(
            rl.spec
                .token_bucket
                .as_ref()
                .unwrap()
                .fill_interval
                .as_deref(),
            Some("1000ms")
        );
    }

    #[test]
    fn other_envoy_filters_are_refused_with_the_field_and_a_pointer() {
        let cases = [
            (
                TYPED_STRUCT.replace("SIDECAR_INBOUND", "SIDECAR_OUTBOUND"),
                "spec.configPatches[0].match.context",
            ),
            (
                TYPED_STRUCT.replace("applyTo: HTTP_FILTER", "applyTo: CLUSTER"),
                "spec.configPatches[0].applyTo",
            ),
            (
                TYPED_STRUCT.replace(
                    "name: envoy.filters.http.local_ratelimit",
                    "name: envoy.filters.http.lua",
                ),
                "spec.configPatches[0].patch.value.name",
            ),
            (
                TYPED_STRUCT.replace("numerator: 100,", "numerator: 50,"),
                "spec.configPatches[0].patch.value.typed_config.value.filter_enabled.default_value",
            ),
            (
                TYPED_STRUCT.replace("max_tokens: 100, ", ""),
                "spec.configPatches[0].patch.value.typed_config.value.token_bucket.max_tokens",
            ),
            (
                DIRECT.replace(
                    "stat_prefix: rl",
                    "stat_prefix: rl
          descriptors: []",
                ),
                "spec.configPatches[0].patch.value.typed_config.descriptors",
            ),
        ];
        for (yaml, field) in cases {
            let (_, errors) = manifest::parse("ef.yaml", &yaml);
            assert_eq!(errors.len(), 1, "{errors:?}");
            assert_eq!(errors[0].field, field, "{errors:?}");
            assert!(
                errors[0]
                    .message
                    .starts_with("EnvoyFilter is not supported here"),
                "{errors:?}"
            );
        }
    }
}
