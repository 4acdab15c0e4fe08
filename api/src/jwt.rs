//! RequestAuthentication, with the semantics Istio gets from Envoy's
//! `jwt_authn` filter, pure, for the proxy's inbound side:
//!
//! - Tokens are read where the workload's jwtRules say (by default
//!   `Authorization: Bearer <token>` and the `access_token` query
//!   parameter); a header without the prefix carries no token.
//! - No token: the request goes on without a request principal (an
//!   AuthorizationPolicy decides whether that is enough).
//! - A token must come from a configured issuer, at one of that issuer's
//!   locations, and be valid: RS256/384/512, PS256/384/512, ES256/384 or
//!   EdDSA, signed by a key of the issuer's JWKS (matched by `kid` when
//!   both have one), within `exp`/`nbf` give or take 60 s, for one of the
//!   rule's audiences when it lists some. Anything else is refused with
//!   401 and the reason ([`Failure`]).
//! - A valid token gives the request principal `iss/sub`, its audiences,
//!   presenter (`azp`) and claims ([`Auth`]).
//!
//! The controller reads the JWKS ([`jwks`]) and resolves `jwksUri`;
//! proxies never fetch one.

use crate::authz::{Auth, Http};
use crate::proto::{JwtHeader, JwtProvider};

mod compile;
pub mod jwks;
mod verify;

pub use compile::{CLAIM_SEPARATOR, applies, compile, jwks_source};
pub use verify::CLOCK_SKEW_SECS;

/// Why a token is refused (Envoy's wording, answered in the 401's body).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Not three base64url parts.
    #[error("Jwt is not in the form of Header.Payload.Signature")]
    Malformed,
    /// The header is not a JSON object.
    #[error("Jwt header is an invalid JSON")]
    BadHeader,
    /// The payload is not a JSON object, or a date claim is not a number.
    #[error("Jwt payload is an invalid JSON")]
    BadPayload,
    /// No jwtRule has this `iss` at the place the token was found.
    #[error("Jwt issuer is not configured")]
    UnknownIssuer,
    /// `none`, HMAC, or unknown.
    #[error("Jwt algorithm is not supported")]
    UnsupportedAlg,
    /// Past `exp`.
    #[error("Jwt is expired")]
    Expired,
    /// Before `nbf`.
    #[error("Jwt not yet valid")]
    NotYetValid,
    /// No audience in the rule's list.
    #[error("Audiences in Jwt are not allowed")]
    Audience,
    /// The issuer's JWKS could not be had.
    #[error("Jwks remote fetch is failed")]
    NoJwks,
    /// No key of the JWKS has the token's `kid` and algorithm.
    #[error("Jwks doesn't have key to match kid or alg from Jwt")]
    NoKey,
    /// The signature does not verify.
    #[error("Jwt verification fails")]
    BadSignature,
}

impl Failure {
    /// A short name, for metrics.
    pub fn code(self) -> &'static str {
        match self {
            Failure::Malformed | Failure::BadHeader | Failure::BadPayload => "malformed",
            Failure::UnknownIssuer => "unknown_issuer",
            Failure::UnsupportedAlg => "unsupported_algorithm",
            Failure::Expired => "expired",
            Failure::NotYetValid => "not_yet_valid",
            Failure::Audience => "audience",
            Failure::NoJwks => "jwks_unavailable",
            Failure::NoKey => "no_matching_key",
            Failure::BadSignature => "bad_signature",
        }
    }
}

/// Where a token was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Location<'p> {
    /// A header, after its prefix.
    Header(&'p JwtHeader),
    /// A query parameter.
    Param(&'p str),
    /// A cookie.
    Cookie(&'p str),
}

/// A request whose token is valid.
#[derive(Debug)]
pub struct Authenticated<'p> {
    /// What it says.
    pub auth: Auth,
    /// The jwtRule that accepted it.
    pub provider: &'p JwtProvider,
    /// Where it was (removed before the app unless the rule forwards it).
    pub location: Location<'p>,
    /// Its payload as sent (base64url), for `outputPayloadToHeader`.
    pub payload: String,
}

fn locations(p: &JwtProvider) -> impl Iterator<Item = Location<'_>> {
    p.from_headers
        .iter()
        .map(Location::Header)
        .chain(p.from_params.iter().map(|s| Location::Param(s)))
        .chain(p.from_cookies.iter().map(|s| Location::Cookie(s)))
}

/// The tokens at `loc`.
fn extract(loc: Location<'_>, http: &dyn Http) -> Vec<String> {
    match loc {
        Location::Header(h) => http
            .header(&h.name.to_ascii_lowercase())
            .into_iter()
            .filter_map(|v| {
                let v = v.trim();
                if h.prefix.is_empty() {
                    return Some(v);
                }
                let head = v.get(..h.prefix.len())?;
                head.eq_ignore_ascii_case(&h.prefix)
                    .then(|| v[h.prefix.len()..].trim())
            })
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .collect(),
        Location::Param(name) => query_values(http.path(), name),
        Location::Cookie(name) => http
            .header("cookie")
            .into_iter()
            .flat_map(|c| c.split(';'))
            .filter_map(|kv| kv.trim().split_once('='))
            .filter(|(k, v)| *k == name && !v.is_empty())
            .map(|(_, v)| v.to_string())
            .collect(),
    }
}

/// The values of query parameter `name` in `path`.
pub fn query_values(path: &str, name: &str) -> Vec<String> {
    let Some((_, query)) = path.split_once('?') else {
        return Vec::new();
    };
    query
        .split('#')
        .next()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
        .collect()
}

/// Judges the tokens of a request to a workload with `providers`, at
/// `now` (Unix seconds): `Ok(None)` without a token; the first token's
/// identity when every token is valid; the first failure otherwise.
pub fn authenticate<'p>(
    providers: &'p [JwtProvider],
    http: &dyn Http,
    now: u64,
) -> Result<Option<Authenticated<'p>>, Failure> {
    let mut seen: Vec<Location<'p>> = Vec::new();
    let mut first = None;
    for loc in providers.iter().flat_map(locations) {
        if seen.contains(&loc) {
            continue;
        }
        seen.push(loc);
        for token in extract(loc, http) {
            let parsed = verify::parse(&token)?;
            let issuer = parsed.claims["iss"].as_str().unwrap_or_default();
            let provider = providers
                .iter()
                .find(|p| p.issuer == issuer && locations(p).any(|l| l == loc))
                .ok_or(Failure::UnknownIssuer)?;
            verify::verify(&parsed, provider, now)?;
            if first.is_none() {
                let claims = &parsed.claims;
                let text = |name: &str| claims[name].as_str().unwrap_or_default().to_string();
                first = Some(Authenticated {
                    auth: Auth {
                        principal: format!("{issuer}/{}", text("sub")),
                        audiences: verify::audiences(claims),
                        presenter: text("azp"),
                        claims: parsed.claims.clone(),
                    },
                    provider,
                    location: loc,
                    payload: parsed.payload_b64.to_string(),
                });
            }
        }
    }
    Ok(first)
}

/// The value of `claim` (nested names joined by
/// [`CLAIM_SEPARATOR`]) as a header carries it: a string as is, a
/// number or boolean written out; `None` for anything else.
pub fn claim_header_value(claims: &serde_json::Value, claim: &str) -> Option<String> {
    let v = claim
        .split(CLAIM_SEPARATOR)
        .try_fold(claims, |v, name| v.get(name))?;
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
