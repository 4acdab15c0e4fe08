//! Why a request goes where it goes and is let in or refused: what the
//! proxies' admin endpoints `/explain/outbound` (the client's proxy: the
//! route, the destinations, their endpoints) and `/explain/inbound` (the
//! server's proxy: the PeerAuthentication mode, the token, the
//! AuthorizationPolicy decision) answer, and `meshctl explain` prints.
//! Also the reasons the proxies note on the requests they refuse, in
//! Envoy's `response_code_details` form, for the access log and
//! `/config_dump`.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::authz::Decision;

/// The request to explain, as both endpoints take it (a query string).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Query {
    /// The method.
    pub method: String,
    /// `http://host[:port]/path?query`.
    pub url: String,
    /// Extra headers, one `name: value` a line.
    #[serde(default)]
    pub headers: String,
    /// Inbound only: the target port on the server's pod.
    #[serde(default)]
    pub port: Option<u16>,
    /// Inbound only: the client's SPIFFE ID (absent: plaintext).
    #[serde(default)]
    pub principal: Option<String>,
    /// Inbound only: the client's address.
    #[serde(default)]
    pub source: Option<IpAddr>,
}

impl Query {
    /// The headers as (lowercase name, value) pairs; `Err` names a line
    /// that is not `name: value`.
    pub fn header_pairs(&self) -> Result<Vec<(String, String)>, String> {
        self.headers
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let (n, v) = l
                    .split_once(':')
                    .ok_or_else(|| format!("header {l:?} is not `name: value`"))?;
                Ok((n.trim().to_ascii_lowercase(), v.trim().to_string()))
            })
            .collect()
    }
}

/// What the client's proxy does with the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Outbound {
    /// The client's SPIFFE ID (what servers see over mTLS).
    pub identity: String,
    /// The client pod's address.
    pub source_address: Option<IpAddr>,
    /// The address the URL's host resolved to, with the port.
    pub address: String,
    /// The Service (hostname) or pod (`namespace/name`) the address is;
    /// `None`: not in the mesh, passed through unrouted.
    pub target: Option<String>,
    /// The VirtualService whose routes apply, if any.
    pub virtual_service: Option<String>,
    /// The matching route; `None` with `note` saying why.
    pub route: Option<RouteChoice>,
    /// Anything else worth knowing (no route, passthrough, opaque port).
    pub note: Option<String>,
}

/// The route that matched.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteChoice {
    /// Its place among the routes (0 first).
    pub index: usize,
    /// Its name (`default` when unnamed).
    pub name: String,
    /// `forward`, or the redirect or direct response it answers.
    pub action: String,
    /// Where `forward` sends requests, by weight.
    pub destinations: Vec<Destination>,
}

/// One weighted destination of a route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Destination {
    /// Host.
    pub host: String,
    /// Subset, if any.
    pub subset: Option<String>,
    /// The Service port.
    pub port: u16,
    /// Weight, percent.
    pub weight: u32,
    /// Its endpoints.
    pub endpoints: Vec<Endpoint>,
    /// Why it has no endpoints to send to, if so.
    pub error: Option<String>,
}

/// One endpoint of a destination.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The pod's `namespace/name`.
    pub pod: String,
    /// Its address.
    pub address: IpAddr,
    /// The port on the pod.
    pub port: u16,
    /// The SPIFFE ID it is dialed with over mTLS; `None`: plaintext.
    pub identity: Option<String>,
}

/// What the server's proxy does with the request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    /// The pod's `namespace/name`.
    pub pod: String,
    /// The target port.
    pub port: u16,
    /// The PeerAuthentication mode in force on that port.
    pub mtls_mode: String,
    /// Whether the connection itself is let in (STRICT refuses
    /// plaintext).
    pub connection: String,
    /// What RequestAuthentication makes of the request's token.
    pub authentication: String,
    /// The AuthorizationPolicy decision.
    pub authorization: Authorization,
}

/// An authorization decision, with what decided it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Authorization {
    /// Whether the request goes on (CUSTOM policies aside).
    pub allowed: bool,
    /// `namespace/name` of the deciding policy (or of every ALLOW policy
    /// when none matched).
    pub policy: Option<String>,
    /// The deciding rule's index.
    pub rule: Option<usize>,
    /// CUSTOM policies that match: their external authorizer decides
    /// first.
    pub custom: Vec<String>,
    /// AUDIT policies that match.
    pub audited: Vec<String>,
    /// In words.
    pub explanation: String,
}

impl Authorization {
    /// `d` (`None`: no policy applies) explained.
    pub fn of(d: Option<&Decision>) -> Self {
        let Some(d) = d else {
            return Self {
                allowed: true,
                explanation: "allowed: no AuthorizationPolicy applies".into(),
                ..Self::default()
            };
        };
        let (policy, rule) = match &d.reason {
            Some(r) => (Some(r.policy.clone()), r.rule),
            None => (None, None),
        };
        let mut explanation = match (d.allowed, &policy, rule) {
            (true, None, _) => "allowed: no ALLOW policy applies and no DENY policy matches".into(),
            (true, Some(p), Some(i)) => format!("allowed by ALLOW policy {p}, rule {i}"),
            (false, Some(p), Some(i)) => {
                format!("denied (403 RBAC: access denied) by DENY policy {p}, rule {i}")
            }
            (false, Some(p), None) => format!(
                "denied (403 RBAC: access denied): ALLOW policies apply ({p}) and none of their rules matches"
            ),
            (allowed, p, r) => format!("allowed={allowed} policy={p:?} rule={r:?}"),
        };
        if !d.custom.is_empty() {
            explanation = format!(
                "first asked of the external authorizer of CUSTOM {}; then {explanation}",
                d.custom.join(", ")
            );
        }
        Self {
            allowed: d.allowed,
            policy,
            rule,
            custom: d.custom.clone(),
            audited: d.audited.clone(),
            explanation,
        }
    }
}

/// The whole explanation `meshctl explain` prints.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    /// The client pod, `namespace/name`.
    pub from: String,
    /// The request.
    pub method: String,
    /// Its URL.
    pub url: String,
    /// The client proxy's side.
    pub outbound: Outbound,
    /// The server proxies' side, one per distinct endpoint workload.
    pub inbound: Vec<Inbound>,
}

/// A request a proxy refused, as `/config_dump` keeps the latest ones.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Denial {
    /// When (Unix milliseconds).
    pub at_unix_ms: u64,
    /// The method.
    pub method: String,
    /// The path.
    pub path: String,
    /// The client's SPIFFE ID, or `unknown` in plaintext.
    pub source_principal: String,
    /// The status answered.
    pub response_code: u16,
    /// Envoy's response flags.
    pub response_flags: String,
    /// Envoy's `response_code_details`, naming the policy and rule.
    pub response_code_details: String,
}

/// Envoy's RBAC `response_code_details` for a denial by `policy`
/// (`namespace/name`) and `rule`, or by no ALLOW policy matching.
pub fn rbac_details(policy: &str, rule: Option<usize>) -> String {
    match (policy.split_once('/'), rule) {
        (Some((ns, name)), Some(i)) => {
            format!("rbac_access_denied_matched_policy[ns[{ns}]-policy[{name}]-rule[{i}]]")
        }
        _ => "rbac_access_denied_matched_policy[none]".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::authz::Reason;

    #[test]
    fn rbac_details_are_envoys() {
        assert_eq!(
            rbac_details("pay/deny-all", Some(0)),
            "rbac_access_denied_matched_policy[ns[pay]-policy[deny-all]-rule[0]]"
        );
        assert_eq!(
            rbac_details("pay/a,pay/b", None),
            "rbac_access_denied_matched_policy[none]"
        );
    }

    #[test]
    fn headers_are_parsed_and_bad_lines_named() {
        let q = Query {
            headers: "X-Role: admin\n\nauthorization: Bearer a:b\n".into(),
            ..Query::default()
        };
        assert_eq!(
            q.header_pairs().unwrap(),
            [
                ("x-role".to_string(), "admin".to_string()),
                ("authorization".to_string(), "Bearer a:b".to_string())
            ]
        );
        let bad = Query {
            headers: "nocolon".into(),
            ..Query::default()
        };
        assert!(bad.header_pairs().unwrap_err().contains("nocolon"));
    }

    #[test]
    fn decisions_are_explained_with_their_policy_and_rule() {
        let none = Authorization::of(None);
        assert!(none.allowed && none.explanation.contains("no AuthorizationPolicy"));
        let deny = Decision {
            allowed: false,
            reason: Some(Reason {
                policy: "pay/block".into(),
                rule: Some(2),
            }),
            audited: vec![],
            custom: vec!["pay/ext".into()],
        };
        let a = Authorization::of(Some(&deny));
        assert_eq!((a.policy.as_deref(), a.rule), (Some("pay/block"), Some(2)));
        assert!(a.explanation.contains("DENY policy pay/block, rule 2"));
        assert!(
            a.explanation
                .starts_with("first asked of the external authorizer of CUSTOM pay/ext")
        );
        let unmatched = Decision {
            allowed: false,
            reason: Some(Reason {
                policy: "pay/payment".into(),
                rule: None,
            }),
            audited: vec![],
            custom: vec![],
        };
        assert!(
            Authorization::of(Some(&unmatched))
                .explanation
                .contains("none of their rules matches")
        );
    }
}
