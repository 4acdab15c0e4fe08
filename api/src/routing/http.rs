//! HTTP routes: matches, the action (weighted destinations, redirect,
//! direct response), rewrite, timeout, retries (Istio's default policy
//! when a route has none), faults, mirrors, header changes and CORS.

use super::{Error, destination, duration, header_rewrites, named, string_match, weight};
use crate::istio::shared::Percent;
use crate::istio::virtual_service::{
    CorsPolicy, HttpFaultInjection, HttpMatchRequest, HttpRetry, HttpRoute,
};
use crate::proto;
use proto::RetryCondition as C;

/// The `retryOn` conditions Envoy and Istio accept (besides status codes).
pub const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Parses Istio's `retryOn` comma list (numbers are retriable status
/// codes); the one reading of it, for validation and for the wire.
pub fn retry_on(s: &str) -> Result<proto::RetryOn, String> {
    let mut on = proto::RetryOn::default();
    let mut add = |c: C| {
        if !on.conditions.contains(&(c as i32)) {
            on.conditions.push(c as i32);
        }
    };
    let mut grpc = Vec::new();
    let mut codes = Vec::new();
    for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match t {
            "5xx" => add(C::FiveXx),
            "gateway-error" => add(C::GatewayError),
            "reset" | "reset-before-request" => add(C::Reset),
            "connect-failure" => add(C::ConnectFailure),
            "retriable-4xx" => add(C::Retriable4xx),
            "refused-stream" => add(C::RefusedStream),
            "cancelled" => grpc.push(1),
            "deadline-exceeded" => grpc.push(4),
            "resource-exhausted" => grpc.push(8),
            "internal" => grpc.push(13),
            "unavailable" => grpc.push(14),
            // The codes come as numbers beside it; the others are Envoy's
            // header-driven conditions, which no response here triggers.
            "retriable-status-codes"
            | "retriable-headers"
            | "envoy-ratelimited"
            | "http3-post-connect-failure" => {}
            n => match n.parse::<u32>() {
                Ok(c) if (100..=599).contains(&c) => codes.push(c),
                _ => return Err(format!("unknown retry condition {n:?}")),
            },
        }
    }
    on.status_codes = codes;
    on.grpc_statuses = grpc;
    Ok(on)
}

/// Istio's policy for a route without `retries`: 2 retries on
/// connect-failure, refused-stream, unavailable, cancelled and 503.
pub fn default_retry() -> proto::Retry {
    proto::Retry {
        attempts: 2,
        per_try_timeout: None,
        on: Some(proto::RetryOn {
            conditions: vec![C::ConnectFailure as i32, C::RefusedStream as i32],
            status_codes: vec![503],
            grpc_statuses: vec![14, 1],
        }),
    }
}

fn retry(r: Option<&HttpRetry>, at: &str) -> Result<proto::Retry, Error> {
    let Some(r) = r else {
        return Ok(default_retry());
    };
    Ok(proto::Retry {
        attempts: u32::try_from(r.attempts.unwrap_or(0)).unwrap_or(0),
        per_try_timeout: duration(r.per_try_timeout.as_ref(), &format!("{at}.perTryTimeout"))?,
        on: Some(match r.retry_on.as_deref() {
            Some(s) => retry_on(s).map_err(|e| format!("{at}.retryOn: {e}"))?,
            None => default_retry().on.unwrap_or_default(),
        }),
    })
}

fn percent(p: Option<&Percent>) -> f64 {
    p.and_then(|p| p.value).unwrap_or(100.0)
}

/// gRPC status codes by their names (as `grpcStatus` gives them).
pub fn grpc_code(name: &str) -> Option<u32> {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    name.parse().ok().or_else(|| {
        NAMES
            .iter()
            .position(|n| n.eq_ignore_ascii_case(name))
            .and_then(|i| u32::try_from(i).ok())
    })
}

fn fault(f: Option<&HttpFaultInjection>, at: &str) -> Result<Option<proto::Fault>, Error> {
    let Some(f) = f else {
        return Ok(None);
    };
    let delay = f
        .delay
        .as_ref()
        .map(|d| {
            Ok::<_, Error>(proto::FaultDelay {
                fixed: duration(d.fixed_delay.as_ref(), &format!("{at}.delay.fixedDelay"))?,
                percent: d
                    .percentage
                    .as_ref()
                    .and_then(|p| p.value)
                    .or(d.percent.map(f64::from))
                    .unwrap_or(100.0),
            })
        })
        .transpose()?;
    let abort = f
        .abort
        .as_ref()
        .map(|a| {
            use proto::fault_abort::Code;
            let code = if let Some(s) = a.http_status {
                Code::HttpStatus(
                    u32::try_from(s)
                        .ok()
                        .filter(|s| (200..=599).contains(s))
                        .ok_or_else(|| format!("{at}.abort.httpStatus: {s} is not a status"))?,
                )
            } else if let Some(g) = &a.grpc_status {
                Code::GrpcStatus(
                    grpc_code(g)
                        .ok_or_else(|| format!("{at}.abort.grpcStatus: unknown status {g:?}"))?,
                )
            } else {
                Code::HttpStatus(503)
            };
            Ok::<_, Error>(proto::FaultAbort {
                code: Some(code),
                percent: percent(a.percentage.as_ref()),
            })
        })
        .transpose()?;
    Ok(Some(proto::Fault { delay, abort }))
}

/// One `HTTPMatchRequest` on the wire (its `gateways` are the caller's).
pub fn request_match(m: &HttpMatchRequest) -> proto::RequestMatch {
    proto::RequestMatch {
        uri: m.uri.as_ref().map(string_match),
        ignore_uri_case: m.ignore_uri_case.unwrap_or(false),
        scheme: m.scheme.as_ref().map(string_match),
        method: m.method.as_ref().map(string_match),
        authority: m.authority.as_ref().map(string_match),
        headers: named(m.headers.as_ref()),
        without_headers: named(m.without_headers.as_ref()),
        query_params: m
            .query_params
            .iter()
            .flatten()
            .map(|(k, v)| proto::NamedMatch {
                name: k.clone(),
                r#match: Some(string_match(v)),
            })
            .collect(),
        port: m.port.unwrap_or(0),
        source_labels: m.source_labels.clone().unwrap_or_default(),
        source_namespace: m.source_namespace.clone().unwrap_or_default(),
    }
}

/// Whether a VirtualService (or one of its matches) with these `gateways`
/// applies to sidecars: none given, or `mesh` among them.
pub fn for_sidecars(gateways: Option<&Vec<String>>) -> bool {
    gateways.is_none_or(|g| g.is_empty() || g.iter().any(|g| g == "mesh"))
}

fn cors(c: &CorsPolicy, at: &str) -> Result<proto::Cors, Error> {
    let mut allow_origins: Vec<proto::StringMatch> = c
        .allow_origins
        .iter()
        .flatten()
        .map(super::string_match)
        .collect();
    allow_origins.extend(c.allow_origin.iter().flatten().map(|o| proto::StringMatch {
        kind: (o != "*").then(|| proto::string_match::Kind::Exact(o.clone())),
    }));
    Ok(proto::Cors {
        allow_origins,
        allow_methods: c.allow_methods.clone().unwrap_or_default(),
        allow_headers: c.allow_headers.clone().unwrap_or_default(),
        expose_headers: c.expose_headers.clone().unwrap_or_default(),
        max_age: duration(c.max_age.as_ref(), &format!("{at}.maxAge"))?,
        allow_credentials: c.allow_credentials.unwrap_or(false),
        forward_unmatched_preflights: c.unmatched_preflights.as_deref() != Some("IGNORE"),
    })
}

fn action(r: &HttpRoute, at: &str, own_host: &str) -> Result<proto::http_route::Action, Error> {
    use proto::http_route::Action;
    if let Some(d) = &r.direct_response {
        let status = d
            .status
            .filter(|s| (200..=599).contains(s))
            .ok_or_else(|| format!("{at}.directResponse.status: not an HTTP status"))?;
        let body = d
            .body
            .as_ref()
            .and_then(|b| b.string.clone())
            .map(String::into_bytes)
            .unwrap_or_default();
        return Ok(Action::DirectResponse(proto::DirectResponse {
            status,
            body,
        }));
    }
    if let Some(rd) = &r.redirect {
        return Ok(Action::Redirect(proto::Redirect {
            uri: rd.uri.clone().unwrap_or_default(),
            authority: rd.authority.clone().unwrap_or_default(),
            port: rd.port.unwrap_or(0),
            scheme: rd.scheme.clone().unwrap_or_default(),
            status: rd.redirect_code.unwrap_or(301),
        }));
    }
    let destinations = match &r.route {
        Some(ds) if !ds.is_empty() => ds
            .iter()
            .map(|d| proto::WeightedDestination {
                destination: d.destination.as_ref().map(destination),
                weight: weight(d.weight, ds.len()),
                headers: header_rewrites(d.headers.as_ref()),
            })
            .collect(),
        _ => vec![to_host(own_host)],
    };
    Ok(Action::Forward(proto::Forward { destinations }))
}

/// All of the traffic to `host`.
pub(super) fn to_host(host: &str) -> proto::WeightedDestination {
    proto::WeightedDestination {
        destination: Some(proto::Destination {
            host: host.to_string(),
            ..Default::default()
        }),
        weight: 100,
        headers: None,
    }
}

/// One route on the wire; `None` when its matches are all for gateways
/// (it never applies to a sidecar).
pub(super) fn route(
    r: &HttpRoute,
    at: &str,
    own_host: &str,
) -> Result<Option<proto::HttpRoute>, Error> {
    let all = r.r#match.as_deref().unwrap_or_default();
    let matches: Vec<proto::RequestMatch> = all
        .iter()
        .filter(|m| for_sidecars(m.gateways.as_ref()))
        .map(request_match)
        .collect();
    if !all.is_empty() && matches.is_empty() {
        return Ok(None);
    }
    let mut mirrors: Vec<proto::Mirror> = r
        .mirror
        .as_ref()
        .map(|d| proto::Mirror {
            destination: Some(destination(d)),
            percent: r
                .mirror_percentage
                .as_ref()
                .and_then(|p| p.value)
                .or(r.mirror_percent.map(f64::from))
                .unwrap_or(100.0),
        })
        .into_iter()
        .collect();
    mirrors.extend(r.mirrors.iter().flatten().filter_map(|m| {
        Some(proto::Mirror {
            destination: Some(destination(m.destination.as_ref()?)),
            percent: percent(m.percentage.as_ref()),
        })
    }));
    Ok(Some(proto::HttpRoute {
        name: r.name.clone().unwrap_or_default(),
        matches,
        action: Some(action(r, at, own_host)?),
        rewrite: r.rewrite.as_ref().map(|w| proto::Rewrite {
            uri: w.uri.clone().unwrap_or_default(),
            authority: w.authority.clone().unwrap_or_default(),
            regex: w.uri_regex_rewrite.as_ref().map(|rr| proto::RegexRewrite {
                pattern: rr.r#match.clone().unwrap_or_default(),
                substitution: rr.rewrite.clone().unwrap_or_default(),
            }),
        }),
        timeout: duration(r.timeout.as_ref(), &format!("{at}.timeout"))?,
        retry: Some(retry(r.retries.as_ref(), &format!("{at}.retries"))?),
        fault: fault(r.fault.as_ref(), &format!("{at}.fault"))?,
        mirrors,
        headers: header_rewrites(r.headers.as_ref()),
        cors: r
            .cors_policy
            .as_ref()
            .map(|c| cors(c, &format!("{at}.corsPolicy")))
            .transpose()?,
    }))
}
