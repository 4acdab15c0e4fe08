//! Compatibility imports for Linkerd users: `linkerd.io/v1alpha2`
//! ServiceProfile and SMI TrafficSplit, read as written and translated into
//! the native model (VirtualService, DestinationRule), so that
//! `meshctl validate -o yaml` shows exactly what they become.

use serde::{Deserialize, Serialize};

use crate::istio::destination_rule::{DestinationRuleSpec, RetryBudget, TrafficPolicy};
use crate::istio::shared::{Destination, PortSelector, StringMatch};
use crate::istio::validate::Problem;
use crate::istio::virtual_service::{
    HttpMatchRequest, HttpRetry, HttpRoute, HttpRouteDestination, VirtualServiceSpec,
};
use crate::istio::{Resource, message};

/// ServiceProfile versions served.
pub const SERVICE_PROFILE_VERSIONS: &[&str] = &["linkerd.io/v1alpha2"];
/// TrafficSplit versions served.
pub const TRAFFIC_SPLIT_VERSIONS: &[&str] = &[
    "split.smi-spec.io/v1alpha1",
    "split.smi-spec.io/v1alpha2",
    "split.smi-spec.io/v1alpha3",
    "split.smi-spec.io/v1alpha4",
];

message!(
    /// The spec of a ServiceProfile (its name is the service's FQDN).
    ServiceProfileSpec { routes: Vec<RouteSpec>, retry_budget: LinkerdRetryBudget, dst_overrides: Vec<WeightedDst>, opaque_ports: Vec<u32> }
);

message!(
    /// A route of a ServiceProfile.
    RouteSpec { name: String, condition: RequestMatch, response_classes: Vec<ResponseClass>, is_retryable: bool, timeout: String }
);

message!(
    /// Which requests a route is: method and path regex, or combinations.
    RequestMatch { all: Vec<RequestMatch>, any: Vec<RequestMatch>, not: Box<RequestMatch>, path_regex: String, method: String }
);

message!(
    /// Responses that count as failures (or not).
    ResponseClass { condition: ResponseMatch, is_failure: bool }
);

message!(
    /// A response condition.
    ResponseMatch { all: Vec<ResponseMatch>, any: Vec<ResponseMatch>, not: Box<ResponseMatch>, status: Range }
);

message!(
    /// A status code range.
    Range { min: u32, max: u32 }
);

message!(
    /// Linkerd's retry budget.
    LinkerdRetryBudget { retry_ratio: f64, min_retries_per_second: u32, ttl: String }
);

message!(
    /// A weighted override of the destination.
    WeightedDst { authority: String, weight: Quantity }
);

message!(
    /// The spec of a TrafficSplit.
    TrafficSplitSpec { service: String, backends: Vec<TrafficSplitBackend>, matches: Vec<serde_json::Value> }
);

message!(
    /// A backend of a TrafficSplit.
    TrafficSplitBackend { service: String, weight: Quantity }
);

/// A weight: an integer, or a Kubernetes quantity such as `500m`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Quantity {
    /// `500`.
    Number(f64),
    /// `"500m"`, `"1"`.
    Text(String),
}

impl schemars::JsonSchema for Quantity {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Quantity".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "x-kubernetes-int-or-string": true,
            "anyOf": [{"type": "integer"}, {"type": "string"}]
        })
    }
}

impl Quantity {
    /// The value, `None` when it is not a quantity.
    pub fn value(&self) -> Option<f64> {
        match self {
            Quantity::Number(n) => Some(*n),
            Quantity::Text(t) => match t.strip_suffix('m') {
                Some(milli) => milli.parse::<f64>().ok().map(|v| v / 1000.0),
                None => t.parse().ok(),
            },
        }
        .filter(|v| v.is_finite() && *v >= 0.0)
    }
}

/// Integer percentages summing to 100 in the proportions of `weights`
/// (largest remainders get the leftover points).
pub fn percentages(weights: &[f64]) -> Vec<i32> {
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return vec![0; weights.len()];
    }
    let exact: Vec<f64> = weights.iter().map(|w| w / total * 100.0).collect();
    let mut out: Vec<i32> = exact.iter().map(|e| e.floor() as i32).collect();
    let mut order: Vec<usize> = (0..weights.len()).collect();
    order.sort_by(|a, b| {
        (exact[*b] - exact[*b].floor()).total_cmp(&(exact[*a] - exact[*a].floor()))
    });
    let short = 100 - out.iter().sum::<i32>();
    for i in order.into_iter().take(usize::try_from(short).unwrap_or(0)) {
        out[i] += 1;
    }
    out
}

fn problem(field: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        field: field.into(),
        message: message.into(),
    }
}

fn meta(
    name: &str,
    ns: Option<&String>,
) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
        name: Some(name.to_string()),
        namespace: ns.cloned(),
        ..Default::default()
    }
}

/// What a ServiceProfile route's condition matches, as Istio matches.
fn request_match(at: &str, m: &RequestMatch, out: &mut HttpMatchRequest) -> Result<(), Problem> {
    if m.any.is_some() || m.not.is_some() {
        return Err(problem(
            at,
            "any and not have no VirtualService equivalent; split the route into one per alternative",
        ));
    }
    if let Some(method) = &m.method {
        out.method = Some(StringMatch {
            exact: Some(method.clone()),
            ..Default::default()
        });
    }
    if let Some(re) = &m.path_regex {
        out.uri = Some(StringMatch {
            regex: Some(re.clone()),
            ..Default::default()
        });
    }
    for (i, sub) in m.all.iter().flatten().enumerate() {
        request_match(&format!("{at}.all[{i}]"), sub, out)?;
    }
    Ok(())
}

/// Failure statuses as `retryOn` conditions.
fn retry_on(classes: Option<&Vec<ResponseClass>>) -> String {
    let ranges: Vec<(u32, u32)> = classes
        .into_iter()
        .flatten()
        .filter(|c| c.is_failure.unwrap_or(false))
        .filter_map(|c| c.condition.as_ref()?.status.as_ref())
        .map(|r| (r.min.unwrap_or(100), r.max.unwrap_or(599)))
        .collect();
    if ranges.is_empty() || ranges.contains(&(500, 599)) {
        // Linkerd's default failure class is 5xx.
        return "5xx".into();
    }
    let codes: Vec<String> = ranges
        .iter()
        .flat_map(|(a, b)| *a..=*b)
        .take(100)
        .map(|c| c.to_string())
        .collect();
    codes.join(",")
}

/// A ServiceProfile's translation: its routes, and its retry budget.
pub type Translated = (
    Resource<VirtualServiceSpec>,
    Option<Resource<DestinationRuleSpec>>,
);

/// A ServiceProfile as a VirtualService (routes, timeouts, retries, dst
/// overrides) and, with a retry budget, a DestinationRule.
pub fn translate_service_profile(
    sp: &Resource<ServiceProfileSpec>,
) -> Result<Translated, Vec<Problem>> {
    let host = sp.metadata.name.clone().unwrap_or_default();
    let ns = sp.metadata.namespace.as_ref();
    let mut problems = Vec::new();
    if host.matches('.').count() < 2 {
        problems.push(problem("metadata.name", format!("{host:?}: a ServiceProfile is named after the service's FQDN, e.g. web.default.svc.cluster.local")));
    }
    let default_route: Vec<HttpRouteDestination> = match &sp.spec.dst_overrides {
        Some(d) if !d.is_empty() => {
            let weights: Vec<f64> = d
                .iter()
                .map(|w| w.weight.as_ref().and_then(Quantity::value).unwrap_or(0.0))
                .collect();
            d.iter()
                .zip(percentages(&weights))
                .enumerate()
                .map(|(i, (w, pct))| {
                    let authority = w.authority.clone().unwrap_or_default();
                    let (h, port) = match authority.rsplit_once(':') {
                        Some((h, p)) if p.parse::<u32>().is_ok() => (h.to_string(), p.parse().ok()),
                        _ => (authority.clone(), None),
                    };
                    if h.is_empty() {
                        problems.push(problem(
                            format!("spec.dstOverrides[{i}].authority"),
                            "required",
                        ));
                    }
                    HttpRouteDestination {
                        destination: Some(Destination {
                            host: Some(h),
                            port: port.map(|n| PortSelector { number: Some(n) }),
                            ..Default::default()
                        }),
                        weight: Some(pct),
                        ..Default::default()
                    }
                })
                .collect()
        }
        _ => vec![HttpRouteDestination {
            destination: Some(Destination {
                host: Some(host.clone()),
                ..Default::default()
            }),
            ..Default::default()
        }],
    };
    let mut http = Vec::new();
    for (i, r) in sp.spec.routes.iter().flatten().enumerate() {
        let at = format!("spec.routes[{i}]");
        let mut m = HttpMatchRequest {
            name: r.name.clone(),
            ..Default::default()
        };
        match &r.condition {
            Some(c) => {
                if let Err(p) = request_match(&format!("{at}.condition"), c, &mut m) {
                    problems.push(p);
                }
            }
            None => problems.push(problem(format!("{at}.condition"), "required")),
        }
        if let Some(t) = &r.timeout
            && let Err(e) = crate::duration::parse(t)
        {
            problems.push(problem(format!("{at}.timeout"), e.to_string()));
        }
        http.push(HttpRoute {
            name: r.name.clone(),
            r#match: Some(vec![m]),
            route: Some(default_route.clone()),
            timeout: r.timeout.clone(),
            retries: r.is_retryable.filter(|r| *r).map(|_| HttpRetry {
                attempts: Some(3),
                retry_on: Some(retry_on(r.response_classes.as_ref())),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    // Everything else still reaches the service (or its overrides).
    http.push(HttpRoute {
        route: Some(default_route),
        ..Default::default()
    });
    let vs = Resource {
        api_version: "networking.istio.io/v1".into(),
        kind: "VirtualService".into(),
        metadata: meta(&host, ns),
        spec: VirtualServiceSpec {
            hosts: Some(vec![host.clone()]),
            http: Some(http),
            ..Default::default()
        },
        status: None,
    };
    let dr = sp.spec.retry_budget.as_ref().map(|b| {
        if b.retry_ratio.is_some_and(|r| !(0.0..=1.0).contains(&r)) {
            problems.push(problem(
                "spec.retryBudget.retryRatio",
                "must be between 0 and 1",
            ));
        }
        Resource {
            api_version: "networking.istio.io/v1".into(),
            kind: "DestinationRule".into(),
            metadata: meta(&host, ns),
            spec: DestinationRuleSpec {
                host: Some(host.clone()),
                traffic_policy: Some(TrafficPolicy {
                    retry_budget: Some(RetryBudget {
                        percent: b.retry_ratio.map(|r| r * 100.0),
                        min_retry_concurrency: b.min_retries_per_second,
                        budget_interval: b.ttl.clone(),
                    }),
                    ..Default::default()
                }),
                ..Default::default()
            },
            status: None,
        }
    });
    if problems.is_empty() {
        Ok((vs, dr))
    } else {
        Err(problems)
    }
}

/// A TrafficSplit as a VirtualService with weighted destinations.
pub fn translate_traffic_split(
    ts: &Resource<TrafficSplitSpec>,
) -> Result<Resource<VirtualServiceSpec>, Vec<Problem>> {
    let mut problems = Vec::new();
    let service = ts.spec.service.clone().unwrap_or_default();
    if service.is_empty() {
        problems.push(problem(
            "spec.service",
            "required: the root service clients call",
        ));
    }
    if ts.spec.matches.as_ref().is_some_and(|m| !m.is_empty()) {
        problems.push(problem(
            "spec.matches",
            "HTTPRouteGroup matches are not translated; write a VirtualService with match instead",
        ));
    }
    let backends = ts.spec.backends.clone().unwrap_or_default();
    if backends.is_empty() {
        problems.push(problem("spec.backends", "at least one backend is required"));
    }
    let mut weights = Vec::new();
    for (i, b) in backends.iter().enumerate() {
        if b.service.as_deref().is_none_or(str::is_empty) {
            problems.push(problem(format!("spec.backends[{i}].service"), "required"));
        }
        match b.weight.as_ref().map(Quantity::value) {
            Some(Some(w)) => weights.push(w),
            _ => {
                problems.push(problem(
                    format!("spec.backends[{i}].weight"),
                    "a number or a quantity such as 500m is required",
                ));
                weights.push(0.0);
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let route = backends
        .iter()
        .zip(percentages(&weights))
        .map(|(b, pct)| HttpRouteDestination {
            destination: Some(Destination {
                host: b.service.clone(),
                ..Default::default()
            }),
            weight: Some(pct),
            ..Default::default()
        })
        .collect();
    Ok(Resource {
        api_version: "networking.istio.io/v1".into(),
        kind: "VirtualService".into(),
        metadata: meta(
            ts.metadata.name.as_deref().unwrap_or_default(),
            ts.metadata.namespace.as_ref(),
        ),
        spec: VirtualServiceSpec {
            hosts: Some(vec![service]),
            http: Some(vec![HttpRoute {
                route: Some(route),
                ..Default::default()
            }]),
            ..Default::default()
        },
        status: None,
    })
}

#[cfg(test)]
mod tests;
