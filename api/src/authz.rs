//! AuthorizationPolicy evaluation, with Istio's semantics, on the wire
//! form ([`proto::AuthzPolicy`]): pure, for the proxy's inbound side and
//! for explanations.
//!
//! - Order: CUSTOM, then DENY, then ALLOW; AUDIT only records.
//! - A DENY policy that matches denies. With ALLOW policies, a request
//!   that none of them matches is denied; without any, it is allowed.
//! - A policy matches when one of its rules does; `spec: {}` has no rule
//!   and matches nothing, `rules: [{}]` matches everything.
//! - A rule matches when one of its `from`, one of its `to` and all of its
//!   `when` match; within a source or an operation every list given must
//!   hold a match and no `not` list may.
//! - Strings match exactly, by prefix (`abc*`), by suffix (`*abc`), or
//!   `*` (any non-empty value). Hosts ignore case and the port.
//! - On a TCP connection (no HTTP), a rule that uses an HTTP-only field
//!   (hosts, methods, paths, request principals, `request.*` keys)
//!   matches nothing in an ALLOW policy and everything in a DENY one.

use std::net::IpAddr;

use crate::proto::{
    AuthzAction, AuthzCondition, AuthzOperation, AuthzPolicy, AuthzRule, AuthzSource,
};

/// A request's HTTP attributes.
pub trait Http {
    /// `:authority` / `Host`.
    fn host(&self) -> &str;
    /// The method.
    fn method(&self) -> &str;
    /// The path, with its query.
    fn path(&self) -> &str;
    /// Every value of header `name` (lowercase).
    fn header(&self, name: &str) -> Vec<&str>;
}

/// What a validated JWT says (RequestAuthentication).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Auth {
    /// `iss/sub`.
    pub principal: String,
    /// `aud`.
    pub audiences: Vec<String>,
    /// `azp`.
    pub presenter: String,
    /// Every claim.
    pub claims: serde_json::Value,
}

/// What a request (or a TCP connection) is judged on.
pub struct Request<'a> {
    /// The peer's SPIFFE ID without `spiffe://` (empty: plaintext).
    pub principal: &'a str,
    /// The peer's namespace (empty: plaintext).
    pub namespace: &'a str,
    /// The connection's source address.
    pub source_ip: IpAddr,
    /// The original client's address (the source's, with no trusted
    /// proxy in front).
    pub remote_ip: IpAddr,
    /// This workload's address.
    pub destination_ip: IpAddr,
    /// The port the client connected to.
    pub destination_port: u16,
    /// The TLS SNI, if any.
    pub sni: &'a str,
    /// The HTTP request; `None` on a TCP connection.
    pub http: Option<&'a dyn Http>,
    /// The validated token, if any.
    pub auth: Option<&'a Auth>,
}

/// Which policy and rule decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reason {
    /// `namespace/name`.
    pub policy: String,
    /// The matching rule's index (`None`: no rule of any ALLOW policy
    /// matched).
    pub rule: Option<usize>,
}

/// The verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request goes on.
    pub allowed: bool,
    /// What decided; `None` when no policy applies.
    pub reason: Option<Reason>,
    /// AUDIT policies that matched.
    pub audited: Vec<String>,
    /// CUSTOM policies that matched: their providers decide.
    pub custom: Vec<String>,
}

/// How a rule fares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fit {
    Yes,
    No,
    /// It uses HTTP-only fields on a TCP connection.
    HttpOnly,
}

fn all(fits: impl IntoIterator<Item = Fit>) -> Fit {
    let mut out = Fit::Yes;
    for f in fits {
        match f {
            Fit::No => return Fit::No,
            Fit::HttpOnly => out = Fit::HttpOnly,
            Fit::Yes => {}
        }
    }
    out
}

/// One of `items` fits (an empty list fits).
fn any<T>(items: &[T], fit: impl Fn(&T) -> Fit) -> Fit {
    if items.is_empty() {
        return Fit::Yes;
    }
    let mut http_only = false;
    for i in items {
        match fit(i) {
            Fit::Yes => return Fit::Yes,
            Fit::HttpOnly => http_only = true,
            Fit::No => {}
        }
    }
    if http_only { Fit::HttpOnly } else { Fit::No }
}

fn yes(b: bool) -> Fit {
    if b { Fit::Yes } else { Fit::No }
}

/// Istio's string match: exact, `prefix*`, `*suffix`, or `*` (non-empty).
pub fn string_matches(pattern: &str, value: &str) -> bool {
    if pattern == "*" {
        return !value.is_empty();
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return value.starts_with(prefix);
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return value.ends_with(suffix);
    }
    pattern == value
}

/// Whether `value` is in the IP or CIDR `block`.
pub fn in_block(block: &str, value: IpAddr) -> bool {
    let (ip, len) = match block.split_once('/') {
        Some((ip, len)) => (ip, len.parse::<u32>().ok()),
        None => (block, None),
    };
    let Ok(net) = ip.parse::<IpAddr>() else {
        return false;
    };
    match (net, value) {
        (IpAddr::V4(n), IpAddr::V4(v)) => {
            let len = len.unwrap_or(32).min(32);
            let mask = u32::MAX.checked_shl(32 - len).unwrap_or(0);
            u32::from(n) & mask == u32::from(v) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(v)) => {
            let len = len.unwrap_or(128).min(128);
            let mask = u128::MAX.checked_shl(128 - len).unwrap_or(0);
            u128::from(n) & mask == u128::from(v) & mask
        }
        _ => false,
    }
}

/// `list` given: one value matches; `not` given: none does.
fn listed(list: &[String], not: &[String], m: impl Fn(&str) -> bool) -> Fit {
    yes((list.is_empty() || list.iter().any(|p| m(p))) && !not.iter().any(|p| m(p)))
}

/// The same for HTTP-only fields: `HttpOnly` on TCP when used.
fn listed_http(
    req: &Request<'_>,
    list: &[String],
    not: &[String],
    m: impl Fn(&dyn Http, &str) -> bool,
) -> Fit {
    if list.is_empty() && not.is_empty() {
        return Fit::Yes;
    }
    match req.http {
        Some(h) => listed(list, not, |p| m(h, p)),
        None => Fit::HttpOnly,
    }
}

/// The peer's ServiceAccount as `namespace/name` (empty: plaintext).
fn service_account(principal: &str) -> String {
    principal
        .split_once("/ns/")
        .map(|(_, r)| r.replacen("/sa/", "/", 1))
        .unwrap_or_default()
}

fn source(s: &AuthzSource, req: &Request<'_>) -> Fit {
    let request_principal = req.auth.map_or("", |a| a.principal.as_str());
    let account = service_account(req.principal);
    all([
        listed(&s.principals, &s.not_principals, |p| {
            string_matches(p, req.principal)
        }),
        listed(&s.service_accounts, &s.not_service_accounts, |p| {
            string_matches(p, &account)
        }),
        listed_http(
            req,
            &s.request_principals,
            &s.not_request_principals,
            |_, p| string_matches(p, request_principal),
        ),
        listed(&s.namespaces, &s.not_namespaces, |p| {
            string_matches(p, req.namespace)
        }),
        listed(&s.ip_blocks, &s.not_ip_blocks, |b| {
            in_block(b, req.source_ip)
        }),
        listed(&s.remote_ip_blocks, &s.not_remote_ip_blocks, |b| {
            in_block(b, req.remote_ip)
        }),
    ])
}

fn host_matches(pattern: &str, host: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let pattern = pattern.to_ascii_lowercase();
    let bare = host
        .rsplit_once(':')
        .filter(|(_, port)| port.parse::<u16>().is_ok())
        .map_or(host.as_str(), |(h, _)| h);
    string_matches(&pattern, &host) || string_matches(&pattern, bare)
}

fn path_only(path: &str) -> &str {
    path.split(['?', '#']).next().unwrap_or(path)
}

fn operation(o: &AuthzOperation, req: &Request<'_>) -> Fit {
    let port = u32::from(req.destination_port);
    all([
        listed_http(req, &o.hosts, &o.not_hosts, |h, p| {
            host_matches(p, h.host())
        }),
        yes((o.ports.is_empty() || o.ports.contains(&port)) && !o.not_ports.contains(&port)),
        listed_http(req, &o.methods, &o.not_methods, |h, p| {
            string_matches(p, h.method())
        }),
        listed_http(req, &o.paths, &o.not_paths, |h, p| {
            string_matches(p, path_only(h.path()))
        }),
    ])
}

/// The names inside `claims[a][b]...`.
fn claim_path(key: &str) -> Option<Vec<&str>> {
    let mut rest = key.strip_prefix("request.auth.claims")?;
    let mut path = Vec::new();
    while let Some(r) = rest.strip_prefix('[') {
        let (name, after) = r.split_once(']')?;
        path.push(name);
        rest = after;
    }
    (rest.is_empty() && !path.is_empty()).then_some(path)
}

/// The string values of a claim (a string, or a list's strings).
fn claim_values<'a>(claims: &'a serde_json::Value, path: &[&str]) -> Vec<&'a str> {
    let mut v = claims;
    for p in path {
        match v.get(p) {
            Some(next) => v = next,
            None => return Vec::new(),
        }
    }
    match v {
        serde_json::Value::String(s) => vec![s.as_str()],
        serde_json::Value::Array(a) => a.iter().filter_map(|x| x.as_str()).collect(),
        _ => Vec::new(),
    }
}

/// The values a condition's key has for `req`; `None` when the key needs
/// HTTP and this is TCP, or is not supported.
fn key_values<'a>(key: &str, req: &'a Request<'a>) -> Option<Vec<String>> {
    let one = |s: &str| {
        Some(if s.is_empty() {
            Vec::new()
        } else {
            vec![s.to_string()]
        })
    };
    match key {
        "source.ip" => Some(vec![req.source_ip.to_string()]),
        "remote.ip" => Some(vec![req.remote_ip.to_string()]),
        "destination.ip" => Some(vec![req.destination_ip.to_string()]),
        "destination.port" => Some(vec![req.destination_port.to_string()]),
        "source.namespace" => one(req.namespace),
        "source.principal" => one(req.principal),
        "source.serviceAccount" => one(&service_account(req.principal)),
        "connection.sni" => one(req.sni),
        _ if key.starts_with("request.") => {
            let http = req.http?;
            if let Some(name) = key
                .strip_prefix("request.headers[")
                .and_then(|r| r.strip_suffix(']'))
            {
                return Some(
                    http.header(&name.to_ascii_lowercase())
                        .into_iter()
                        .map(str::to_string)
                        .collect(),
                );
            }
            let auth = req.auth;
            match key {
                "request.auth.principal" => one(auth.map_or("", |a| a.principal.as_str())),
                "request.auth.presenter" => one(auth.map_or("", |a| a.presenter.as_str())),
                "request.auth.audiences" => {
                    Some(auth.map(|a| a.audiences.clone()).unwrap_or_default())
                }
                _ => {
                    let path = claim_path(key)?;
                    Some(
                        auth.map(|a| {
                            claim_values(&a.claims, &path)
                                .into_iter()
                                .map(str::to_string)
                                .collect()
                        })
                        .unwrap_or_default(),
                    )
                }
            }
        }
        _ => None,
    }
}

fn condition(c: &AuthzCondition, req: &Request<'_>) -> Fit {
    let Some(values) = key_values(&c.key, req) else {
        return Fit::HttpOnly;
    };
    let ip_key = matches!(c.key.as_str(), "source.ip" | "remote.ip" | "destination.ip");
    let m = |pattern: &str| {
        values.iter().any(|v| {
            if ip_key {
                v.parse().is_ok_and(|ip| in_block(pattern, ip))
            } else {
                string_matches(pattern, v)
            }
        })
    };
    listed(&c.values, &c.not_values, m)
}

fn rule(r: &AuthzRule, req: &Request<'_>) -> Fit {
    all([
        any(&r.from, |f| source(f, req)),
        any(&r.to, |t| operation(t, req)),
        all(r.when.iter().map(|c| condition(c, req))),
    ])
}

/// The first rule of `p` that matches, for its action: an HTTP-only rule
/// on TCP matches in a DENY policy and not in an ALLOW one.
fn matching_rule(p: &AuthzPolicy, req: &Request<'_>) -> Option<usize> {
    let deny = p.action() == AuthzAction::Deny;
    p.rules.iter().position(|r| match rule(r, req) {
        Fit::Yes => true,
        Fit::HttpOnly => deny,
        Fit::No => false,
    })
}

/// The decision of `policies` (those that apply to the workload) on
/// `req`.
pub fn decide(policies: &[AuthzPolicy], req: &Request<'_>) -> Decision {
    let of = |action: AuthzAction| policies.iter().filter(move |p| p.action() == action);
    let matched = |action| {
        of(action)
            .filter_map(|p| Some((p, matching_rule(p, req)?)))
            .collect::<Vec<_>>()
    };
    let audited = matched(AuthzAction::Audit)
        .into_iter()
        .map(|(p, _)| p.name.clone())
        .collect();
    let custom = matched(AuthzAction::Custom)
        .into_iter()
        .map(|(p, _)| p.name.clone())
        .collect();
    let decision = |allowed, reason| Decision {
        allowed,
        reason,
        audited,
        custom,
    };
    if let Some((p, i)) = matched(AuthzAction::Deny).into_iter().next() {
        return decision(
            false,
            Some(Reason {
                policy: p.name.clone(),
                rule: Some(i),
            }),
        );
    }
    let allow: Vec<&AuthzPolicy> = of(AuthzAction::Allow).collect();
    if allow.is_empty() {
        return decision(true, None);
    }
    for p in &allow {
        if let Some(i) = matching_rule(p, req) {
            return decision(
                true,
                Some(Reason {
                    policy: p.name.clone(),
                    rule: Some(i),
                }),
            );
        }
    }
    let names: Vec<&str> = allow.iter().map(|p| p.name.as_str()).collect();
    decision(
        false,
        Some(Reason {
            policy: names.join(","),
            rule: None,
        }),
    )
}

mod compile;
pub mod ext;
pub use compile::{applies, compile, selects};

#[cfg(test)]
pub(crate) mod tests;
