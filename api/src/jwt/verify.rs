//! One token checked against one provider: its form, algorithm, times,
//! audiences and signature, in Envoy's order.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};

use super::Failure;
use crate::proto::{JwtKey, JwtProvider};

/// Envoy's default clock skew for `exp` and `nbf`.
pub const CLOCK_SKEW_SECS: u64 = 60;

/// A token split and decoded, not verified yet.
pub struct Parsed<'a> {
    /// `header.payload`, what is signed.
    pub signed: &'a str,
    /// The header's `alg`.
    pub alg: String,
    /// The header's `kid`, if any.
    pub kid: Option<String>,
    /// The payload.
    pub claims: serde_json::Value,
    /// The payload, as sent (base64url).
    pub payload_b64: &'a str,
    signature: Vec<u8>,
}

fn b64(s: &str) -> Result<Vec<u8>, Failure> {
    URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| Failure::Malformed)
}

/// Splits and decodes `token`.
pub fn parse(token: &str) -> Result<Parsed<'_>, Failure> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Failure::Malformed);
    };
    let header: serde_json::Value =
        serde_json::from_slice(&b64(h)?).map_err(|_| Failure::BadHeader)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&b64(p)?).map_err(|_| Failure::BadPayload)?;
    if !header.is_object() {
        return Err(Failure::BadHeader);
    }
    if !claims.is_object() {
        return Err(Failure::BadPayload);
    }
    Ok(Parsed {
        signed: &token[..h.len() + 1 + p.len()],
        alg: header["alg"].as_str().unwrap_or_default().to_string(),
        kid: header["kid"].as_str().map(str::to_string),
        claims,
        payload_b64: p,
        signature: b64(s)?,
    })
}

/// The algorithms accepted, with the key type each needs. `none` and the
/// HMAC ones are not: a JWKS holds public keys, and an HMAC "signed" with
/// one is the algorithm-confusion attack.
fn key_type(alg: &str) -> Option<(&'static str, Option<&'static str>)> {
    Some(match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" => ("RSA", None),
        "ES256" => ("EC", Some("P-256")),
        "ES384" => ("EC", Some("P-384")),
        "EdDSA" => ("OKP", Some("Ed25519")),
        _ => return None,
    })
}

fn signature_ok(alg: &str, key: &JwtKey, msg: &[u8], sig: &[u8]) -> bool {
    let rsa = |params: &'static signature::RsaParameters| {
        RsaPublicKeyComponents {
            n: &key.n,
            e: &key.e,
        }
        .verify(params, msg, sig)
        .is_ok()
    };
    let unparsed = |params: &'static dyn signature::VerificationAlgorithm| {
        UnparsedPublicKey::new(params, &key.public_key)
            .verify(msg, sig)
            .is_ok()
    };
    match alg {
        "RS256" => rsa(&signature::RSA_PKCS1_2048_8192_SHA256),
        "RS384" => rsa(&signature::RSA_PKCS1_2048_8192_SHA384),
        "RS512" => rsa(&signature::RSA_PKCS1_2048_8192_SHA512),
        "PS256" => rsa(&signature::RSA_PSS_2048_8192_SHA256),
        "PS384" => rsa(&signature::RSA_PSS_2048_8192_SHA384),
        "PS512" => rsa(&signature::RSA_PSS_2048_8192_SHA512),
        "ES256" => unparsed(&signature::ECDSA_P256_SHA256_FIXED),
        "ES384" => unparsed(&signature::ECDSA_P384_SHA384_FIXED),
        "EdDSA" => unparsed(&signature::ED25519),
        _ => false,
    }
}

/// A numeric date claim; `Err` when present and not a number.
fn date(claims: &serde_json::Value, name: &str) -> Result<Option<u64>, Failure> {
    match claims.get(name) {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
            .map(Some)
            .ok_or(Failure::BadPayload),
    }
}

/// The token's audiences (`aud`: a string or a list).
pub fn audiences(claims: &serde_json::Value) -> Vec<String> {
    match &claims["aud"] {
        serde_json::Value::String(s) => vec![s.clone()],
        serde_json::Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// Checks `t` (whose issuer is `p`'s) at `now` (Unix seconds).
pub fn verify(t: &Parsed<'_>, p: &JwtProvider, now: u64) -> Result<(), Failure> {
    let Some((kty, crv)) = key_type(&t.alg) else {
        return Err(Failure::UnsupportedAlg);
    };
    if date(&t.claims, "exp")?.is_some_and(|exp| now > exp.saturating_add(CLOCK_SKEW_SECS)) {
        return Err(Failure::Expired);
    }
    if date(&t.claims, "nbf")?.is_some_and(|nbf| now.saturating_add(CLOCK_SKEW_SECS) < nbf) {
        return Err(Failure::NotYetValid);
    }
    if !p.audiences.is_empty() && !audiences(&t.claims).iter().any(|a| p.audiences.contains(a)) {
        return Err(Failure::Audience);
    }
    if !p.keys_error.is_empty() {
        return Err(Failure::NoJwks);
    }
    let candidates: Vec<&JwtKey> = p
        .keys
        .iter()
        .filter(|k| k.kty == kty && crv.is_none_or(|c| k.crv == c))
        .filter(|k| k.alg.is_empty() || k.alg == t.alg)
        .filter(|k| match (&t.kid, k.kid.is_empty()) {
            (Some(kid), false) => *kid == k.kid,
            _ => true,
        })
        .collect();
    if candidates.is_empty() {
        return Err(Failure::NoKey);
    }
    let msg = t.signed.as_bytes();
    if candidates
        .iter()
        .any(|k| signature_ok(&t.alg, k, msg, &t.signature))
    {
        Ok(())
    } else {
        Err(Failure::BadSignature)
    }
}
