"""What the test_claims_<lang>.py files share: the x-hive-auth-claims value the server would send, and
the check of a guest that reads it with its SDK's accessor."""

from __future__ import annotations

import json
import time
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from hive.manifest import parse_manifest
from hive.policy import CLAIMS_HEADER, InvokeAuth, claims_header
from hive.sandbox import Sandbox
from tests.sdk.common import instance, req


def verified_claims() -> bytes:
    """An x-hive-auth-claims value as the server makes it: an ES256 token checked by InvokeAuth."""
    key = ec.generate_private_key(ec.SECP256R1())
    jwks = {"keys": [{**ECAlgorithm.to_jwk(key.public_key(), as_dict=True), "kid": "k"}]}
    auth = InvokeAuth(parse_manifest(json.dumps({"auth": {"mode": "jwt", "jwt": {"jwks": jwks}}})).auth)
    payload = {
        "sub": "user-1",
        "exp": int(time.time()) + 60,
        "name": 'Zoë "Z" 🐝',
        "app_metadata": {"provider": "email"},
    }
    claims = auth.check(
        {"authorization": f"Bearer {jwt.encode(payload, key, algorithm='ES256', headers={'kid': 'k'})}"}
    )
    assert claims is not None
    return claims_header(claims)


def check_claims_guest(sandbox: Sandbox, wasm: Path) -> None:
    """The guest answers 200 with the claims text as its body and their "sub" (read with the SDK's JSON
    parser) as x-sub, or 404 "none" when the request carries no claims."""
    inst = instance(sandbox, wasm.read_bytes())
    value = verified_claims()
    resp = inst.call(req(b"POST", b"/api/v1/edge/claims", b"", [(b"accept", b"*/*"), (CLAIMS_HEADER.encode(), value)]))
    assert (resp.status, resp.body) == (200, value)
    assert (b"x-sub", b"user-1") in resp.headers
    assert json.loads(resp.body)["name"] == 'Zoë "Z" 🐝'
    missing = inst.call(req(b"GET", b"/api/v1/edge/claims", b"", [(b"authorization", b"Bearer x")]))
    assert (missing.status, missing.body) == (404, b"none")
