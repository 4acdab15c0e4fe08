//! A JWKS (RFC 7517) read into the keys proxies verify with: RSA, EC
//! P-256 and P-384, and Ed25519 public keys. Other keys (symmetric ones,
//! encryption-only ones) are skipped; a set with no usable key is an
//! error.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::proto::JwtKey;

fn field(k: &serde_json::Value, name: &str) -> Result<Vec<u8>, String> {
    let v = k[name]
        .as_str()
        .ok_or_else(|| format!("key has no `{name}`"))?;
    URL_SAFE_NO_PAD
        .decode(v.trim_end_matches('='))
        .map_err(|e| format!("key's `{name}` is not base64url: {e}"))
}

fn key(k: &serde_json::Value) -> Result<Option<JwtKey>, String> {
    if k["use"].as_str().is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    let text = |name: &str| k[name].as_str().unwrap_or_default().to_string();
    let mut out = JwtKey {
        kid: text("kid"),
        alg: text("alg"),
        kty: text("kty"),
        crv: text("crv"),
        ..JwtKey::default()
    };
    match (out.kty.as_str(), out.crv.as_str()) {
        ("RSA", _) => {
            out.n = field(k, "n")?;
            out.e = field(k, "e")?;
        }
        ("EC", "P-256" | "P-384") => {
            let (x, y) = (field(k, "x")?, field(k, "y")?);
            let len = if out.crv == "P-256" { 32 } else { 48 };
            if x.len() != len || y.len() != len {
                return Err(format!("{} key's x or y is not {len} bytes", out.crv));
            }
            out.public_key = [&[4u8][..], &x, &y].concat();
        }
        ("OKP", "Ed25519") => out.public_key = field(k, "x")?,
        _ => return Ok(None),
    }
    Ok(Some(out))
}

/// The usable keys of the JWKS `json`.
pub fn parse(json: &str) -> Result<Vec<JwtKey>, String> {
    let set: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
    let keys = set["keys"]
        .as_array()
        .ok_or("the JWKS has no `keys` list")?;
    let mut out = Vec::new();
    for (i, k) in keys.iter().enumerate() {
        if let Some(k) = key(k).map_err(|e| format!("keys[{i}]: {e}"))? {
            out.push(k);
        }
    }
    if out.is_empty() {
        return Err("the JWKS holds no RSA, EC (P-256, P-384) or Ed25519 signing key".into());
    }
    Ok(out)
}
