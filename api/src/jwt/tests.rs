use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use serde_json::json;

use super::*;
use crate::authz::tests::Req;
use crate::proto::JwtKey;

const NOW: u64 = 1_800_000_000;
const ISS: &str = "https://auth.example.com";

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn b64(v: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(v)
}

/// A signing key with its public JWK.
enum Signer {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
}

impl Signer {
    fn es256() -> Self {
        let rng = SystemRandom::new();
        let alg = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let der = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
        Signer::Es256(EcdsaKeyPair::from_pkcs8(alg, der.as_ref(), &rng).unwrap())
    }
    fn eddsa() -> Self {
        let der = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).unwrap();
        Signer::EdDsa(Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap())
    }
    fn alg(&self) -> &'static str {
        match self {
            Signer::Es256(_) => "ES256",
            Signer::EdDsa(_) => "EdDSA",
        }
    }
    fn jwk(&self, kid: &str) -> serde_json::Value {
        match self {
            Signer::Es256(k) => {
                let p = k.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": kid, "use": "sig",
                       "x": b64(&p[1..33]), "y": b64(&p[33..])})
            }
            Signer::EdDsa(k) => {
                json!({"kty": "OKP", "crv": "Ed25519", "kid": kid, "x": b64(k.public_key().as_ref())})
            }
        }
    }
    fn sign(&self, header: serde_json::Value, claims: serde_json::Value) -> String {
        let signed = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = match self {
            Signer::Es256(k) => k
                .sign(&SystemRandom::new(), signed.as_bytes())
                .unwrap()
                .as_ref()
                .to_vec(),
            Signer::EdDsa(k) => k.sign(signed.as_bytes()).as_ref().to_vec(),
        };
        format!("{signed}.{}", b64(&sig))
    }
    fn token(&self, kid: &str, claims: serde_json::Value) -> String {
        self.sign(json!({"alg": self.alg(), "kid": kid, "typ": "JWT"}), claims)
    }
}

fn claims() -> serde_json::Value {
    json!({"iss": ISS, "sub": "alice", "aud": ["payments"], "azp": "web",
           "exp": NOW + 600, "nbf": NOW - 10, "role": "admin", "org": {"team": "pay"}})
}

fn provider(jwks: serde_json::Value) -> JwtProvider {
    let ra: crate::istio::Resource<crate::istio::security::RequestAuthenticationSpec> =
        serde_json::from_value(json!({
            "apiVersion": "security.istio.io/v1", "kind": "RequestAuthentication",
            "metadata": {"name": "jwt", "namespace": "shop"},
            "spec": {"jwtRules": [{"issuer": ISS, "audiences": ["payments"], "jwks": jwks.to_string()}]}
        }))
        .unwrap();
    compile(&ra, &Default::default()).remove(0)
}

fn bearer(token: &str) -> Req {
    let value = leak(format!("Bearer {token}"));
    Req {
        host: "payments",
        method: "GET",
        path: "/",
        headers: vec![("authorization", value)],
    }
}

fn judge(p: &JwtProvider, req: &Req) -> Result<Option<Auth>, Failure> {
    authenticate(std::slice::from_ref(p), req, NOW).map(|a| a.map(|a| a.auth))
}

#[test]
fn a_valid_token_of_each_curve_gives_the_request_principal_and_claims() {
    for signer in [Signer::es256(), Signer::eddsa()] {
        let p = provider(json!({"keys": [signer.jwk("k1")]}));
        assert!(p.keys_error.is_empty(), "{}", p.keys_error);
        let auth = judge(&p, &bearer(&signer.token("k1", claims())))
            .unwrap()
            .unwrap_or_else(|| panic!("{} token not read", signer.alg()));
        assert_eq!(auth.principal, format!("{ISS}/alice"));
        assert_eq!(auth.audiences, ["payments"]);
        assert_eq!(auth.presenter, "web");
        assert_eq!(auth.claims["role"], "admin");
        assert_eq!(
            claim_header_value(&auth.claims, "org.team").as_deref(),
            Some("pay")
        );
        assert_eq!(
            claim_header_value(&auth.claims, "exp"),
            Some((NOW + 600).to_string())
        );
        assert_eq!(claim_header_value(&auth.claims, "org"), None);
    }
}

#[test]
fn every_bad_token_is_refused_with_its_reason() {
    let signer = Signer::es256();
    let other = Signer::es256();
    let p = provider(json!({"keys": [signer.jwk("k1")]}));
    let with = |f: &dyn Fn(&mut serde_json::Value)| {
        let mut c = claims();
        f(&mut c);
        signer.token("k1", c)
    };
    let none = format!(
        "{}.{}.",
        b64(br#"{"alg":"none"}"#),
        b64(claims().to_string().as_bytes())
    );
    let hs256 = signer.sign(json!({"alg": "HS256", "kid": "k1"}), claims());
    let cases: Vec<(String, Failure)> = vec![
        ("not-a-jwt".into(), Failure::Malformed),
        ("a.b".into(), Failure::Malformed),
        (format!("{}.e30.", b64(b"[1]")), Failure::BadHeader),
        (other.token("k1", claims()), Failure::BadSignature),
        (signer.token("k9", claims()), Failure::NoKey),
        (none, Failure::UnsupportedAlg),
        (hs256, Failure::UnsupportedAlg),
        (with(&|c| c["exp"] = json!(NOW - 61)), Failure::Expired),
        (with(&|c| c["nbf"] = json!(NOW + 61)), Failure::NotYetValid),
        (with(&|c| c["exp"] = json!("tomorrow")), Failure::BadPayload),
        (with(&|c| c["aud"] = json!("orders")), Failure::Audience),
        (
            with(&|c| c.as_object_mut().unwrap().remove("aud").map(drop).unwrap()),
            Failure::Audience,
        ),
        (
            with(&|c| c["iss"] = json!("https://evil.example.com")),
            Failure::UnknownIssuer,
        ),
    ];
    for (token, want) in cases {
        assert_eq!(judge(&p, &bearer(&token)), Err(want), "{token}");
    }
    // Within the clock skew, a token is still (or already) valid.
    let edge = with(&|c| {
        c["exp"] = json!(NOW - 59);
        c["nbf"] = json!(NOW + 59);
    });
    assert!(judge(&p, &bearer(&edge)).unwrap().is_some());
}

#[test]
fn tokens_are_read_only_where_the_rule_says() {
    let signer = Signer::eddsa();
    let p = provider(json!({"keys": [signer.jwk("k1")]}));
    let token = signer.token("k1", claims());
    let mut req = bearer(&token);
    assert!(judge(&p, &req).unwrap().is_some());
    req.headers = vec![("authorization", leak(format!("Basic {token}")))];
    assert_eq!(judge(&p, &req), Ok(None), "another scheme carries no token");
    req.headers = vec![];
    assert_eq!(
        judge(&p, &req),
        Ok(None),
        "no token: no principal, no refusal"
    );
    req.path = leak(format!("/pay?x=1&access_token={token}"));
    assert!(
        judge(&p, &req).unwrap().is_some(),
        "the default query parameter"
    );
    req.path = "/pay?access_token=garbage";
    assert_eq!(judge(&p, &req), Err(Failure::Malformed));

    let mut by_cookie = p.clone();
    by_cookie.from_headers.clear();
    by_cookie.from_params.clear();
    by_cookie.from_cookies = vec!["session".into()];
    req.path = "/";
    req.headers = vec![("cookie", leak(format!("theme=dark; session={token}")))];
    let a = authenticate(std::slice::from_ref(&by_cookie), &req, NOW)
        .unwrap()
        .unwrap();
    assert_eq!(a.location, Location::Cookie("session"));
    req.headers = vec![("authorization", leak(format!("Bearer {token}")))];
    assert_eq!(
        authenticate(std::slice::from_ref(&by_cookie), &req, NOW).map(|a| a.is_some()),
        Ok(false),
        "a rule reading cookies ignores the Authorization header"
    );
}

#[test]
fn keys_are_picked_by_kid_and_type_and_a_missing_jwks_refuses_every_token() {
    let (a, b) = (Signer::es256(), Signer::eddsa());
    let p =
        provider(json!({"keys": [a.jwk("old"), b.jwk("new"), {"kty": "oct", "k": "c2VjcmV0"}]}));
    assert_eq!(p.keys.len(), 2, "the symmetric key is skipped");
    assert!(
        judge(&p, &bearer(&a.token("old", claims())))
            .unwrap()
            .is_some()
    );
    assert!(
        judge(&p, &bearer(&b.token("new", claims())))
            .unwrap()
            .is_some()
    );
    // A token without kid is tried against every key of its type.
    let no_kid = b.sign(json!({"alg": "EdDSA"}), claims());
    assert!(judge(&p, &bearer(&no_kid)).unwrap().is_some());

    let mut missing = p.clone();
    missing.keys.clear();
    missing.keys_error = "GET https://auth.example.com/jwks: connection refused".into();
    assert_eq!(
        judge(&missing, &bearer(&a.token("old", claims()))),
        Err(Failure::NoJwks)
    );
}

#[test]
fn jwks_are_read_with_errors_that_say_what_is_wrong() {
    assert!(jwks::parse("{").unwrap_err().contains("not JSON"));
    assert!(jwks::parse("{}").unwrap_err().contains("no `keys`"));
    assert!(
        jwks::parse(r#"{"keys":[{"kty":"oct","k":"AA"}]}"#)
            .unwrap_err()
            .contains("no RSA")
    );
    let e = jwks::parse(r#"{"keys":[{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}]}"#).unwrap_err();
    assert!(e.starts_with("keys[0]: P-256 key's x or y"), "{e}");
    let rsa =
        jwks::parse(r#"{"keys":[{"kty":"RSA","kid":"r","alg":"RS256","n":"AQAB","e":"AQAB"}]}"#)
            .unwrap();
    assert_eq!(
        rsa,
        vec![JwtKey {
            kid: "r".into(),
            alg: "RS256".into(),
            kty: "RSA".into(),
            n: vec![1, 0, 1],
            e: vec![1, 0, 1],
            ..JwtKey::default()
        }]
    );
}

#[test]
fn rules_get_istios_defaults_and_their_jwks_source() {
    let p = provider(json!({"keys": [Signer::eddsa().jwk("k")]}));
    assert_eq!(p.name, "shop/jwt");
    assert_eq!(
        p.from_headers,
        vec![JwtHeader {
            name: "authorization".into(),
            prefix: "Bearer ".into()
        }]
    );
    assert_eq!(p.from_params, ["access_token"]);
    assert!(!p.forward_original_token);
    let rule = |v: serde_json::Value| -> crate::istio::security::JwtRule {
        serde_json::from_value(v).unwrap()
    };
    assert_eq!(
        jwks_source(&rule(json!({"issuer": ISS, "jwksUri": "https://k/jwks"}))).as_deref(),
        Some("https://k/jwks")
    );
    assert_eq!(
        jwks_source(&rule(json!({"issuer": "https://auth.example.com/"}))).as_deref(),
        Some("https://auth.example.com/.well-known/openid-configuration")
    );
    assert_eq!(
        jwks_source(&rule(json!({"issuer": ISS, "jwks": "{}"}))),
        None
    );
    assert_eq!(jwks_source(&rule(json!({"issuer": "alice"}))), None);
}
