//! A RequestAuthentication's jwtRules as proxies receive them, their keys
//! resolved: inline `jwks` first, else what the controller fetched from
//! `jwksUri` (or from the issuer's OpenID discovery document when neither
//! is given, as Istio does).

use std::collections::BTreeMap;

use crate::istio::Resource;
use crate::istio::security::{JwtRule, RequestAuthenticationSpec};
use crate::proto::{JwtClaimHeader, JwtHeader, JwtProvider};

/// Joins the names of a nested claim in `outputClaimToHeaders`.
pub const CLAIM_SEPARATOR: char = '.';

/// Where the controller fetches `rule`'s JWKS: its `jwksUri`, else the
/// issuer's OpenID discovery document; `None` when the JWKS is inline.
pub fn jwks_source(rule: &JwtRule) -> Option<String> {
    if rule.jwks.as_deref().is_some_and(|j| !j.is_empty()) {
        return None;
    }
    match rule.jwks_uri.as_deref().filter(|u| !u.is_empty()) {
        Some(uri) => Some(uri.to_string()),
        None => {
            let issuer = rule.issuer.as_deref().unwrap_or_default();
            (issuer.starts_with("https://") || issuer.starts_with("http://")).then(|| {
                format!(
                    "{}/.well-known/openid-configuration",
                    issuer.trim_end_matches('/')
                )
            })
        }
    }
}

fn provider(
    name: &str,
    rule: &JwtRule,
    fetched: &BTreeMap<String, Result<String, String>>,
) -> JwtProvider {
    let jwks = match (
        rule.jwks.as_deref().filter(|j| !j.is_empty()),
        jwks_source(rule),
    ) {
        (Some(inline), _) => Ok(inline.to_string()),
        (None, Some(src)) => fetched
            .get(&src)
            .cloned()
            .unwrap_or_else(|| Err(format!("{src} not fetched yet"))),
        (None, None) => Err("no jwks, no jwksUri, and the issuer is not a URL".into()),
    };
    let (keys, keys_error) = match jwks.and_then(|j| super::jwks::parse(&j)) {
        Ok(keys) => (keys, String::new()),
        Err(e) => (Vec::new(), e),
    };
    let mut from_headers: Vec<JwtHeader> = rule
        .from_headers
        .iter()
        .flatten()
        .map(|h| JwtHeader {
            name: h.name.clone().unwrap_or_default(),
            prefix: h.prefix.clone().unwrap_or_default(),
        })
        .collect();
    let mut from_params = rule.from_params.clone().unwrap_or_default();
    let from_cookies = rule.from_cookies.clone().unwrap_or_default();
    if from_headers.is_empty() && from_params.is_empty() && from_cookies.is_empty() {
        from_headers.push(JwtHeader {
            name: "authorization".into(),
            prefix: "Bearer ".into(),
        });
        from_params.push("access_token".into());
    }
    JwtProvider {
        name: name.to_string(),
        issuer: rule.issuer.clone().unwrap_or_default(),
        audiences: rule.audiences.clone().unwrap_or_default(),
        keys,
        from_headers,
        from_params,
        from_cookies,
        forward_original_token: rule.forward_original_token.unwrap_or(false),
        output_payload_to_header: rule.output_payload_to_header.clone().unwrap_or_default(),
        output_claim_to_headers: rule
            .output_claim_to_headers
            .iter()
            .flatten()
            .map(|c| JwtClaimHeader {
                header: c.header.clone().unwrap_or_default(),
                claim: c.claim.clone().unwrap_or_default(),
            })
            .collect(),
        keys_error,
    }
}

/// `ra`'s rules for proxies (validated beforehand), with the JWKS the
/// controller `fetched` by source ([`jwks_source`]).
pub fn compile(
    ra: &Resource<RequestAuthenticationSpec>,
    fetched: &BTreeMap<String, Result<String, String>>,
) -> Vec<JwtProvider> {
    let name = ra.address();
    ra.spec
        .jwt_rules
        .iter()
        .flatten()
        .map(|r| provider(&name, r, fetched))
        .collect()
}

/// Whether `ra` applies to a workload of `namespace` labelled `labels`
/// (as an AuthorizationPolicy would).
pub fn applies(
    ra: &Resource<RequestAuthenticationSpec>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> bool {
    let targeted =
        ra.spec.target_ref.is_some() || ra.spec.target_refs.as_ref().is_some_and(|t| !t.is_empty());
    crate::authz::selects(
        ra.namespace(),
        ra.spec.selector.as_ref(),
        targeted,
        namespace,
        labels,
    )
}
