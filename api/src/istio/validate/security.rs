//! Checks of `security.istio.io` and `telemetry.istio.io` resources.

use super::{Check, Problem};
use crate::istio::security::{
    AuthorizationPolicySpec, PeerAuthenticationSpec, RequestAuthenticationSpec, Source,
};
use crate::istio::shared::WorkloadSelector;
use crate::istio::telemetry::TelemetrySpec;

const MTLS_MODES: &[&str] = &["UNSET", "DISABLE", "PERMISSIVE", "STRICT"];
const ACTIONS: &[&str] = &["ALLOW", "DENY", "AUDIT", "CUSTOM"];
/// Condition keys Istio's authorization understands (`[...]` takes a name).
const CONDITION_KEYS: &[&str] = &[
    "request.headers[",
    "source.ip",
    "remote.ip",
    "source.namespace",
    "source.principal",
    "source.serviceAccount",
    "request.auth.principal",
    "request.auth.audiences",
    "request.auth.presenter",
    "request.auth.claims[",
    "destination.ip",
    "destination.port",
    "connection.sni",
    "experimental.envoy.filters.",
];
const METRICS: &[&str] = &[
    "ALL_METRICS",
    "REQUEST_COUNT",
    "REQUEST_DURATION",
    "REQUEST_SIZE",
    "RESPONSE_SIZE",
    "TCP_OPENED_CONNECTIONS",
    "TCP_CLOSED_CONNECTIONS",
    "TCP_SENT_BYTES",
    "TCP_RECEIVED_BYTES",
    "GRPC_REQUEST_MESSAGES",
    "GRPC_RESPONSE_MESSAGES",
];
const WORKLOAD_MODES: &[&str] = &["CLIENT_AND_SERVER", "CLIENT", "SERVER"];
const TAG_OPERATIONS: &[&str] = &["UPSERT", "REMOVE"];

/// Whether `name` can be a Prometheus label.
fn label_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn has_selector(s: Option<&WorkloadSelector>) -> bool {
    s.and_then(|s| s.match_labels.as_ref())
        .is_some_and(|m| !m.is_empty())
}

/// Checks a PeerAuthentication spec.
pub fn peer_authentication(spec: &PeerAuthenticationSpec) -> Vec<Problem> {
    let mut c = Check::default();
    c.one_of(
        "spec.mtls.mode",
        spec.mtls.as_ref().and_then(|m| m.mode.as_ref()),
        MTLS_MODES,
    );
    if let Some(ports) = &spec.port_level_mtls {
        if !has_selector(spec.selector.as_ref()) {
            c.fail(
                "spec.portLevelMtls",
                "needs a workload selector (spec.selector.matchLabels): ports are per workload",
            );
        }
        for (port, m) in ports {
            c.port(&format!("spec.portLevelMtls[{port}]"), Some(*port));
            c.one_of(
                &format!("spec.portLevelMtls[{port}].mode"),
                m.mode.as_ref(),
                MTLS_MODES,
            );
        }
    }
    c.0
}

/// Whether `p` is an Istio principal: `<trust domain>/ns/<ns>/sa/<sa>`,
/// `*`, or one with a single `*` at its start or end.
fn principal_problem(p: &str) -> Option<String> {
    if p == "*" {
        return None;
    }
    if p.starts_with("spiffe://") {
        return Some(format!(
            "{p:?}: write principals without spiffe://, e.g. {:?}",
            p.trim_start_matches("spiffe://")
        ));
    }
    let inner = p.strip_prefix('*').or_else(|| p.strip_suffix('*'));
    match inner {
        Some(rest) if rest.contains('*') => Some(format!("{p:?}: only one * at the start or the end is allowed")),
        Some(_) => None,
        None if p.contains('*') => Some(format!("{p:?}: * is only allowed at the start or the end")),
        None => format!("spiffe://{p}")
            .parse::<crate::spiffe::SpiffeId>()
            .err()
            .map(|_| format!("{p:?} is not a SPIFFE path: use <trust domain>/ns/<namespace>/sa/<service account>")),
    }
}

fn ip_block(v: &str) -> bool {
    let (ip, len) = v.split_once('/').unwrap_or((v, ""));
    match ip.parse::<std::net::IpAddr>() {
        Ok(a) if len.is_empty() => a.is_ipv4() || a.is_ipv6(),
        Ok(a) => len
            .parse::<u8>()
            .is_ok_and(|l| l <= if a.is_ipv4() { 32 } else { 128 }),
        Err(_) => false,
    }
}

fn source(c: &mut Check, at: &str, s: &Source) {
    for (name, list) in [
        ("principals", &s.principals),
        ("notPrincipals", &s.not_principals),
    ] {
        for (i, p) in list.iter().flatten().enumerate() {
            if let Some(m) = principal_problem(p) {
                c.fail(format!("{at}.{name}[{i}]"), m);
            }
        }
    }
    for (name, list) in [
        ("ipBlocks", &s.ip_blocks),
        ("notIpBlocks", &s.not_ip_blocks),
        ("remoteIpBlocks", &s.remote_ip_blocks),
        ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
    ] {
        for (i, b) in list.iter().flatten().enumerate() {
            if !ip_block(b) {
                c.fail(
                    format!("{at}.{name}[{i}]"),
                    format!("{b:?} is not an IP address or CIDR"),
                );
            }
        }
    }
}

/// Checks an AuthorizationPolicy spec.
pub fn authorization_policy(spec: &AuthorizationPolicySpec) -> Vec<Problem> {
    let mut c = Check::default();
    c.one_of("spec.action", spec.action.as_ref(), ACTIONS);
    let custom = spec.action.as_deref() == Some("CUSTOM");
    match (&spec.provider, custom) {
        (None, true) => c.fail(
            "spec.provider",
            "required with action CUSTOM: the extension provider's name",
        ),
        (Some(_), false) => c.fail("spec.provider", "only used with action CUSTOM"),
        _ => {}
    }
    if has_selector(spec.selector.as_ref())
        && (spec.target_ref.is_some() || spec.target_refs.is_some())
    {
        c.fail(
            "spec.selector",
            "set either selector or targetRef(s), not both",
        );
    }
    for (i, r) in spec.rules.iter().flatten().enumerate() {
        let at = format!("spec.rules[{i}]");
        for (j, f) in r.from.iter().flatten().enumerate() {
            match &f.source {
                Some(s) => source(&mut c, &format!("{at}.from[{j}].source"), s),
                None => c.fail(format!("{at}.from[{j}].source"), "required"),
            }
        }
        for (j, t) in r.to.iter().flatten().enumerate() {
            let Some(op) = &t.operation else {
                c.fail(format!("{at}.to[{j}].operation"), "required");
                continue;
            };
            for (name, list) in [("ports", &op.ports), ("notPorts", &op.not_ports)] {
                for (k, p) in list.iter().flatten().enumerate() {
                    if !p.parse::<u16>().is_ok_and(|p| p > 0) {
                        c.fail(
                            format!("{at}.to[{j}].operation.{name}[{k}]"),
                            format!("{p:?} is not a port (1-65535)"),
                        );
                    }
                }
            }
        }
        for (j, w) in r.when.iter().flatten().enumerate() {
            let f = format!("{at}.when[{j}]");
            match w.key.as_deref() {
                None | Some("") => c.fail(format!("{f}.key"), "required"),
                Some(k)
                    if !CONDITION_KEYS.iter().any(|known| {
                        k == *known || (known.ends_with(['[', '.']) && k.starts_with(known))
                    }) =>
                {
                    c.fail(format!("{f}.key"), format!("unknown key {k:?}; e.g. request.headers[x-token], source.ip, request.auth.claims[iss]"));
                }
                Some(_) => {}
            }
            if w.values.as_ref().is_none_or(Vec::is_empty)
                && w.not_values.as_ref().is_none_or(Vec::is_empty)
            {
                c.fail(f, "needs values or notValues");
            }
        }
    }
    c.0
}

/// Checks a RequestAuthentication spec.
pub fn request_authentication(spec: &RequestAuthenticationSpec) -> Vec<Problem> {
    let mut c = Check::default();
    for (i, r) in spec.jwt_rules.iter().flatten().enumerate() {
        let at = format!("spec.jwtRules[{i}]");
        if r.issuer.as_deref().is_none_or(str::is_empty) {
            c.fail(format!("{at}.issuer"), "required");
        }
        if r.jwks.is_some() && r.jwks_uri.is_some() {
            c.fail(at.clone(), "set only one of jwks and jwksUri");
        }
        if let Some(u) = &r.jwks_uri
            && !(u.starts_with("https://") || u.starts_with("http://"))
        {
            c.fail(
                format!("{at}.jwksUri"),
                format!("{u:?} is not an http(s) URL"),
            );
        }
        if let Some(j) = &r.jwks
            && serde_json::from_str::<serde_json::Value>(j)
                .map(|v| v.get("keys").is_none())
                .unwrap_or(true)
        {
            c.fail(
                format!("{at}.jwks"),
                "not a JSON Web Key Set (a JSON object with \"keys\")",
            );
        }
        for (j, h) in r.from_headers.iter().flatten().enumerate() {
            if h.name.as_deref().is_none_or(str::is_empty) {
                c.fail(format!("{at}.fromHeaders[{j}].name"), "required");
            }
        }
        for (j, o) in r.output_claim_to_headers.iter().flatten().enumerate() {
            for (name, v) in [("header", &o.header), ("claim", &o.claim)] {
                if v.as_deref().is_none_or(str::is_empty) {
                    c.fail(format!("{at}.outputClaimToHeaders[{j}].{name}"), "required");
                }
            }
        }
        c.duration(&format!("{at}.timeout"), r.timeout.as_ref());
    }
    c.0
}

/// Checks a Telemetry spec.
pub fn telemetry(spec: &TelemetrySpec) -> Vec<Problem> {
    let mut c = Check::default();
    for (i, t) in spec.tracing.iter().flatten().enumerate() {
        if let Some(p) = t.random_sampling_percentage
            && !(0.0..=100.0).contains(&p)
        {
            c.fail(
                format!("spec.tracing[{i}].randomSamplingPercentage"),
                format!("{p} is outside 0..100"),
            );
        }
        c.one_of(
            &format!("spec.tracing[{i}].match.mode"),
            t.r#match.as_ref().and_then(|m| m.mode.as_ref()),
            WORKLOAD_MODES,
        );
    }
    for (i, m) in spec.metrics.iter().flatten().enumerate() {
        c.duration(
            &format!("spec.metrics[{i}].reportingInterval"),
            m.reporting_interval.as_ref(),
        );
        for (j, o) in m.overrides.iter().flatten().enumerate() {
            let at = format!("spec.metrics[{i}].overrides[{j}]");
            let sel = o.r#match.as_ref();
            c.one_of(
                &format!("{at}.match.metric"),
                sel.and_then(|s| s.metric.as_ref()),
                METRICS,
            );
            c.one_of(
                &format!("{at}.match.mode"),
                sel.and_then(|s| s.mode.as_ref()),
                WORKLOAD_MODES,
            );
            for (tag, t) in o.tag_overrides.iter().flatten() {
                let at = format!("{at}.tagOverrides.{tag}");
                c.one_of(
                    &format!("{at}.operation"),
                    t.operation.as_ref(),
                    TAG_OPERATIONS,
                );
                if !label_name(tag) {
                    c.fail(
                        at.clone(),
                        "a metric label name: letters, digits and underscores, not starting with a digit",
                    );
                }
                if t.operation.as_deref() == Some("REMOVE") {
                    continue;
                }
                match t.value.as_deref() {
                    None | Some("") => c.fail(
                        format!("{at}.value"),
                        "required unless operation is REMOVE: a CEL expression such as request.host or 'literal'",
                    ),
                    Some(v) => {
                        if let Err(e) = crate::telemetry::expr::parse(v) {
                            c.fail(format!("{at}.value"), e);
                        }
                    }
                }
            }
        }
    }
    for (i, a) in spec.access_logging.iter().flatten().enumerate() {
        c.one_of(
            &format!("spec.accessLogging[{i}].match.mode"),
            a.r#match.as_ref().and_then(|m| m.mode.as_ref()),
            WORKLOAD_MODES,
        );
        if let Some(e) = a.filter.as_ref().and_then(|f| f.expression.as_deref())
            && let Err(e) = crate::telemetry::expr::parse(e)
        {
            c.fail(format!("spec.accessLogging[{i}].filter.expression"), e);
        }
    }
    c.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn principals() {
        for ok in [
            "*",
            "cluster.local/ns/default/sa/sleep",
            "cluster.local/ns/default/*",
            "*/ns/default/sa/sleep",
            "*sleep",
        ] {
            assert_eq!(principal_problem(ok), None, "{ok}");
        }
        for bad in [
            "spiffe://cluster.local/ns/a/sa/b",
            "cluster.local/ns/a",
            "cluster.local/*/sa/b",
            "*a*",
            "sleep",
        ] {
            assert!(principal_problem(bad).is_some(), "{bad}");
        }
    }

    #[test]
    fn ip_blocks() {
        for ok in ["10.0.0.1", "10.0.0.0/8", "::1", "2001:db8::/32"] {
            assert!(ip_block(ok), "{ok}");
        }
        for bad in ["10.0.0.0/33", "10.0.0", "example.com", "2001:db8::/129"] {
            assert!(!ip_block(bad), "{bad}");
        }
    }
}
