"""Makes the keys and tokens of the JWT scenario with PyJWT, into DIR:
jwks.json (RSA rsa-1, EC P-256 ec-1, Ed25519 ed-1), jwks-rotated.json
(RSA rsa-2 only) and tokens.json (name -> token). Usage: jwt_tokens.py
DIR ISSUER AUDIENCE."""
import base64
import hashlib
import hmac
import json
import os
import sys
import time

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

out, issuer, audience = sys.argv[1], sys.argv[2], sys.argv[3]
now = int(time.time())

rsa1 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
rsa2 = rsa.generate_private_key(public_exponent=65537, key_size=2048)
ec1 = ec.generate_private_key(ec.SECP256R1())
ed1 = ed25519.Ed25519PrivateKey.generate()


def b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jwk(key, kid):
    if isinstance(key, rsa.RSAPrivateKey):
        d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        d = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    else:
        raw = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        d = {"kty": "OKP", "crv": "Ed25519", "x": b64(raw)}
    d["kid"] = kid
    d["use"] = "sig"
    return d


def claims(**over):
    c = {"iss": issuer, "sub": "alice", "aud": audience, "iat": now,
         "exp": now + 3600, "role": "admin", "team": {"name": "payments"}}
    c.update(over)
    return {k: v for k, v in c.items() if v is not None}


def sign(key, alg, kid, **over):
    return jwt.encode(claims(**over), key, algorithm=alg, headers={"kid": kid})


def unsigned(header, payload, secret=None):
    signed = b64(json.dumps(header).encode()) + "." + b64(json.dumps(payload).encode())
    sig = "" if secret is None else b64(
        hmac.new(secret, signed.encode(), hashlib.sha256).digest())
    return signed + "." + sig


rsa1_public_pem = rsa1.public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)

tokens = {
    "rs256": sign(rsa1, "RS256", "rsa-1"),
    "ps256": sign(rsa1, "PS256", "rsa-1"),
    "es256": sign(ec1, "ES256", "ec-1"),
    "eddsa": sign(ed1, "EdDSA", "ed-1"),
    "user": sign(rsa1, "RS256", "rsa-1", sub="bob", role="user"),
    "wrong_key": sign(rsa2, "RS256", "rsa-1"),
    "none": unsigned({"alg": "none", "typ": "JWT"}, claims()),
    "expired": sign(rsa1, "RS256", "rsa-1", iat=now - 7200, exp=now - 3600),
    "not_yet_valid": sign(rsa1, "RS256", "rsa-1", nbf=now + 3600),
    "wrong_audience": sign(rsa1, "RS256", "rsa-1", aud="someone-else"),
    "wrong_issuer": sign(rsa1, "RS256", "rsa-1", iss="https://evil.example.com"),
    "unknown_kid": sign(rsa1, "RS256", "nope"),
    # Algorithm confusion: HS256 keyed with the RSA public key as published.
    "hs256_confusion": unsigned({"alg": "HS256", "typ": "JWT", "kid": "rsa-1"},
                                claims(), rsa1_public_pem),
    "rotated": sign(rsa2, "RS256", "rsa-2"),
}

os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "jwks.json"), "w") as f:
    json.dump({"keys": [jwk(rsa1, "rsa-1"), jwk(ec1, "ec-1"), jwk(ed1, "ed-1")]}, f)
with open(os.path.join(out, "jwks-rotated.json"), "w") as f:
    json.dump({"keys": [jwk(rsa2, "rsa-2")]}, f)
with open(os.path.join(out, "tokens.json"), "w") as f:
    json.dump(tokens, f)
