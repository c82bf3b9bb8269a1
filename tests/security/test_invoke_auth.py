"""Per-function invoke auth (API keys, HS256 and RS256 JWTs) and the admin token, on a real server.

A refused request never reaches the guest: the guest counts its calls in a global (returned as the
body) and logs a marker with hive.log for each, so a call that slipped through would show in both.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive.manifest import parse_manifest
from hive.policy import InvokeAuth, InvokeUnauthorized
from tests.security.common import (
    assert_error,
    check_registry,
    counting_guest,
    fresh,
    function_log,
    healthy,
)
from tests.support import Server, start_server

pytestmark = pytest.mark.slow

KEY1 = "key-one-0123456789abcdef"
KEY2 = "key-two-fedcba9876543210"
SECRET = "hs256-secret-" + "0123456789abcdef" * 3 + "-end"  # 65 bytes: long enough for HS512 too
OTHER_SECRET = "another-secret-" + "fedcba9876543210" * 3 + "-x"
AUD, ISS = "edge-hive-tests", "https://auth.example"
MARKER = b"guest-was-called"

# Counts its calls and logs a marker on each one; answers the count.
COUNTER = counting_guest(MARKER)


def _pem(key: rsa.RSAPrivateKey) -> str:
    return (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
OTHER_RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
PUBLIC_PEM = _pem(RSA_KEY)

FUNCTIONS: dict[str, dict[str, Any]] = {
    "open": {},
    "keyed": {"mode": "api_key", "api_keys": [KEY1, KEY2]},
    "hs": {"mode": "jwt", "jwt": {"hs256_secret": SECRET}},
    "rs": {"mode": "jwt", "jwt": {"rs256_public_key": PUBLIC_PEM}},
    "aud": {"mode": "jwt", "jwt": {"hs256_secret": SECRET, "audience": AUD, "issuer": ISS}},
    "leeway": {"mode": "jwt", "jwt": {"hs256_secret": SECRET, "leeway_s": 300}},
}


@dataclass
class Auth:
    server: Server

    def call(self, name: str, client: httpx.Client | None = None, **headers: str) -> httpx.Response:
        hdrs = {k.replace("_", "-"): v for k, v in headers.items()}
        if client is not None:
            return client.post(f"/api/v1/edge/{name}", headers=hdrs)
        return fresh(self.server, "POST", f"/api/v1/edge/{name}", headers=hdrs)

    def guest_lines(self, name: str) -> int:
        return sum(1 for r in function_log(self.server, name) if r["kind"] == "output" and r["text"] == MARKER.decode())


@pytest.fixture(scope="module")
def auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Auth]:
    server = start_server(tmp_path_factory.mktemp("auth") / "data", workers=2)
    try:
        for name, a in FUNCTIONS.items():
            r = server.deploy(name, COUNTER, json.dumps({"auth": a} if a else {}))
            assert r.status_code == 201, r.text
        yield Auth(server)
        check_registry(server, dict.fromkeys(FUNCTIONS, 1))
    finally:
        server.stop()


def denied(r: httpx.Response, code: str) -> dict[str, Any]:
    body = assert_error(r, 401, code)
    assert r.headers["www-authenticate"] == f'Bearer error="{code}"'
    return body


def assert_never_called(auth: Auth, name: str, attempts: list[dict[str, str]], code: str) -> None:
    """On one keep-alive connection (one worker, one warm instance): a good call, every bad attempt,
    another good call. The count goes up by exactly one, and the guest logged only the good calls."""
    good = GOOD_HEADERS[name]()
    lines = auth.guest_lines(name)
    with auth.server.client() as c:
        first = auth.call(name, c, **good)
        assert first.status_code == 200, first.text
        n = int.from_bytes(first.content, "little")
        for headers in attempts:
            body = denied(auth.call(name, c, **headers), code)
            for secret in headers.values():  # errors never echo what was sent
                if len(secret) >= 8:
                    assert secret not in body["message"]
        second = auth.call(name, c, **good)
        assert second.status_code == 200
        assert int.from_bytes(second.content, "little") == n + 1
    assert auth.guest_lines(name) == lines + 2
    healthy(auth.server)


def token(claims: dict[str, Any] | None = None, key: Any = SECRET, alg: str = "HS256", **extra: Any) -> str:
    now = int(time.time())
    payload = {"sub": "user-1", "exp": now + 300, **(claims or {}), **extra}
    return jwt.encode({k: v for k, v in payload.items() if v is not None}, key, algorithm=alg)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: dict[str, Any], key: bytes | None) -> str:
    """A JWT signed by hand (HMAC-SHA256 with `key`, or unsigned), for what PyJWT refuses to make."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}"
    sig = b"" if key is None else hmac.new(key, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{_b64(sig)}"


def bearer(t: str) -> dict[str, str]:
    return {"authorization": f"Bearer {t}"}


GOOD_HEADERS = {
    "keyed": lambda: {"apikey": KEY1},
    "hs": lambda: bearer(token()),
    "rs": lambda: bearer(token(key=RSA_KEY, alg="RS256")),
    "aud": lambda: bearer(token(aud=AUD, iss=ISS)),
    "leeway": lambda: bearer(token()),
}


# --- public ---


def test_a_public_function_needs_nothing(auth: Auth) -> None:
    assert auth.call("open").status_code == 200
    assert auth.call("open", apikey="whatever", authorization="Bearer junk").status_code == 200


# --- API keys ---


@pytest.mark.parametrize(
    "headers",
    [
        {"apikey": KEY1},
        {"apikey": KEY2},
        {"x-api-key": KEY1},
        {"authorization": f"Bearer {KEY2}"},
        {"authorization": f"bearer {KEY1}"},
    ],
)
def test_api_key_in_each_place(auth: Auth, headers: dict[str, str]) -> None:
    r = auth.call("keyed", **headers)
    assert r.status_code == 200, r.text


def test_wrong_api_keys_never_reach_the_guest(auth: Auth) -> None:
    wrong = [
        {"apikey": "key-one-0123456789abcdeX"},  # same length, last character differs
        {"apikey": KEY1[:-1]},  # a prefix
        {"apikey": KEY1 + "0"},  # longer
        {"x-api-key": KEY1.upper()},
        {"authorization": f"Bearer {KEY1[::-1]}"},
        {"apikey": auth.server.token},  # the admin token is not an invoke key
        {"apikey": SECRET},
    ]
    assert_never_called(auth, "keyed", wrong, "invalid_api_key")


def test_missing_api_key_never_reaches_the_guest(auth: Auth) -> None:
    missing = [{}, {"apikey": ""}, {"authorization": f"Basic {KEY1}"}, {"authorization": "Bearer"}, {"x-apikey": KEY1}]
    assert_never_called(auth, "keyed", missing, "missing_credentials")


# --- JWT HS256 ---


def test_valid_hs256_token(auth: Auth) -> None:
    r = auth.call("hs", **bearer(token()))
    assert r.status_code == 200, r.text


def test_expired_token(auth: Auth) -> None:
    assert_never_called(auth, "hs", [bearer(token(exp=int(time.time()) - 60))], "token_expired")


def test_token_not_yet_valid(auth: Auth) -> None:
    assert_never_called(auth, "hs", [bearer(token(nbf=int(time.time()) + 600))], "token_not_yet_valid")


def test_invalid_hs256_tokens(auth: Auth) -> None:
    now = int(time.time())
    claims = {"sub": "user-1", "exp": now + 300}
    bad = [
        token(key=OTHER_SECRET),  # wrong secret
        handmade({"alg": "none", "typ": "JWT"}, claims, None),  # unsigned
        handmade({"alg": "None", "typ": "JWT"}, claims, None),
        jwt.encode(claims, SECRET, algorithm="HS512"),  # a strong algorithm, but not the one configured
        jwt.encode(claims, SECRET, algorithm="HS384"),
        token(key=RSA_KEY, alg="RS256"),  # RS256 when only HS256 is configured
        jwt.encode({"sub": "user-1"}, SECRET, algorithm="HS256"),  # no exp
        handmade({"alg": "HS256", "typ": "JWT"}, {"sub": "x", "exp": "tomorrow"}, SECRET.encode()),
        token()[:-3] + "AAA",  # a tampered signature
        "not-a-jwt",
        "a.b.c",
        token().replace(".", "", 1),
    ]
    assert_never_called(auth, "hs", [bearer(t) for t in bad], "invalid_token")


def test_leeway_accepts_a_recently_expired_token(auth: Auth) -> None:
    just_expired = token(exp=int(time.time()) - 60)
    assert auth.call("leeway", **bearer(just_expired)).status_code == 200
    denied(auth.call("hs", **bearer(just_expired)), "token_expired")
    denied(auth.call("leeway", **bearer(token(exp=int(time.time()) - 3600))), "token_expired")


def test_a_jwt_is_not_accepted_as_an_api_key_and_vice_versa(auth: Auth) -> None:
    denied(auth.call("keyed", **bearer(token())), "invalid_api_key")
    denied(auth.call("hs", apikey=token()), "missing_credentials")
    denied(auth.call("hs", **bearer(KEY1)), "invalid_token")


# --- JWT RS256 ---


def test_valid_rs256_token(auth: Auth) -> None:
    r = auth.call("rs", **bearer(token(key=RSA_KEY, alg="RS256")))
    assert r.status_code == 200, r.text


def test_invalid_rs256_tokens(auth: Auth) -> None:
    now = int(time.time())
    claims = {"sub": "user-1", "exp": now + 300}
    bad = [
        token(key=OTHER_RSA_KEY, alg="RS256"),  # signed by another key
        token(key=RSA_KEY, alg="RS512"),
        token(key=RSA_KEY, alg="PS256"),
        token(),  # HS256 when only RS256 is configured
        # Key confusion: HS256 "signed" with the public key as the HMAC secret.
        handmade({"alg": "HS256", "typ": "JWT"}, claims, PUBLIC_PEM.encode()),
        handmade({"alg": "none", "typ": "JWT"}, claims, None),
        token(key=RSA_KEY, alg="RS256", exp=None),  # no exp
    ]
    assert_never_called(auth, "rs", [bearer(t) for t in bad], "invalid_token")
    assert_never_called(auth, "rs", [bearer(token(key=RSA_KEY, alg="RS256", exp=now - 60))], "token_expired")


# --- audience and issuer ---


def test_audience_and_issuer(auth: Auth) -> None:
    assert auth.call("aud", **bearer(token(aud=AUD, iss=ISS))).status_code == 200
    assert auth.call("aud", **bearer(token(aud=["other", AUD], iss=ISS))).status_code == 200
    bad = [
        token(iss=ISS),  # no audience
        token(aud="someone-else", iss=ISS),
        token(aud=["a", "b"], iss=ISS),
        token(aud=AUD),  # no issuer
        token(aud=AUD, iss="https://evil.example"),
        token(aud=AUD, iss=ISS, key=OTHER_SECRET),
    ]
    assert_never_called(auth, "aud", [bearer(t) for t in bad], "invalid_token")


# --- the admin token ---


def test_admin_routes_refuse_invoke_credentials(auth: Auth) -> None:
    s = auth.server
    creds = [
        bearer(KEY1),
        {"apikey": KEY1},
        {"x-api-key": KEY2},
        bearer(token()),
        bearer(token(key=RSA_KEY, alg="RS256")),
        bearer(SECRET),
    ]
    for headers in creds:
        for method, path in [
            ("GET", "/api/v1/edge"),
            ("GET", "/metrics"),
            ("GET", "/api/v1/edge/keyed/versions"),
            ("GET", "/api/v1/edge/keyed/logs"),
            ("POST", "/api/v1/edge/keyed/rollback"),
            ("DELETE", "/api/v1/edge/keyed"),
        ]:
            assert_error(fresh(s, method, path, headers=headers), 401, "unauthorized")
        with s.client() as c:
            r = c.post(
                "/api/v1/edge/deploy",
                headers=headers,
                data={"function": "keyed"},
                files={"wasm": ("f.wasm", COUNTER, "application/wasm")},
            )
        assert_error(r, 401, "unauthorized")
    assert auth.call("keyed", apikey=KEY1).status_code == 200  # nothing was deleted


def test_wrong_admin_tokens_of_any_length(auth: Auth) -> None:
    real = auth.server.token
    flipped = real[:-1] + ("x" if real[-1] != "x" else "y")
    wrong = [flipped, real[:-1], real + "x", real * 2, "x", "x" * len(real), real.upper(), " " + real[1:]]
    for t in wrong:
        assert_error(fresh(auth.server, "GET", "/api/v1/edge", headers=bearer(t)), 401, "unauthorized")
    for header in [f"Basic {real}", real, f"Token {real}", "Bearer", ""]:
        assert_error(fresh(auth.server, "GET", "/api/v1/edge", headers={"authorization": header}), 401, "unauthorized")
    assert fresh(auth.server, "GET", "/api/v1/edge", headers=bearer(real)).status_code == 200


# --- manifests ---

BAD_AUTH = [
    {"mode": "magic"},
    {"mode": "API_KEY", "api_keys": [KEY1]},
    {"mode": "api_key"},
    {"mode": "api_key", "api_keys": []},
    {"mode": "api_key", "api_keys": ["short"]},
    {"mode": "api_key", "api_keys": [KEY1, "short"]},
    {"mode": "api_key", "api_keys": [123456789012345678]},
    {"mode": "api_key", "api_keys": KEY1},
    {"mode": "api_key", "api_keys": [KEY1], "extra": True},
    {"mode": "jwt"},
    {"mode": "jwt", "jwt": {}},
    {"mode": "jwt", "jwt": {"hs256_secret": "too-short"}},
    {"mode": "jwt", "jwt": {"hs256_secret": "31-bytes-is-not-enough-for-hs25"}},
    {"mode": "jwt", "jwt": {"hs256_secret": SECRET, "leeway_s": -1}},
    {"mode": "jwt", "jwt": {"hs256_secret": SECRET, "leeway_s": 86_400}},
    {"mode": "jwt", "jwt": {"hs256_secret": SECRET, "algorithms": ["none"]}},
    {"mode": "jwt", "jwt": {"rs256_public_key": "not a key"}},
    {"mode": "jwt", "jwt": {"rs256_public_key": "-----BEGIN PUBLIC KEY-----\ngarbage\n-----END PUBLIC KEY-----\n"}},
    {
        "mode": "jwt",
        "jwt": {
            "rs256_public_key": RSA_KEY.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ).decode()
        },
    },
    {
        "mode": "jwt",
        "jwt": {
            "rs256_public_key": ec.generate_private_key(ec.SECP256R1())
            .public_key()
            .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
            .decode()
        },
    },
    "api_key",
    None,
]


def test_bad_auth_config_is_an_invalid_manifest(auth: Auth) -> None:
    for bad in BAD_AUTH:
        r = auth.server.deploy("keyed", COUNTER, json.dumps({"auth": bad}))
        assert_error(r, 422, "invalid_manifest")
    # The function kept its first version and its keys.
    r = fresh(auth.server, "GET", "/api/v1/edge/keyed/versions", headers=auth.server.admin)
    assert r.json()["current"] == 1 and len(r.json()["versions"]) == 1
    assert auth.call("keyed", apikey=KEY1).status_code == 200
    denied(auth.call("keyed"), "missing_credentials")


def test_listings_show_the_mode_but_never_keys_or_secrets(auth: Auth) -> None:
    s = auth.server
    listing = fresh(s, "GET", "/api/v1/edge", headers=s.admin)
    rows = {r["function"]: r for r in listing.json()["functions"]}
    assert {n: rows[n]["auth"] for n in FUNCTIONS} == {
        "open": "public",
        "keyed": "api_key",
        "hs": "jwt",
        "rs": "jwt",
        "aud": "jwt",
        "leeway": "jwt",
    }
    texts = [listing.text] + [fresh(s, "GET", f"/api/v1/edge/{n}/versions", headers=s.admin).text for n in FUNCTIONS]
    texts += [fresh(s, "GET", f"/api/v1/edge/{n}/logs", headers=s.admin).text for n in FUNCTIONS]
    texts.append(s.log())
    body_of_pem = PUBLIC_PEM.splitlines()[1]
    for text in texts:
        for secret in (KEY1, KEY2, SECRET, body_of_pem):
            assert secret not in text


# --- no claim set makes the check fail with anything but a 401 ---

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
CLAIM = st.sampled_from(["exp", "nbf", "iat", "aud", "iss", "sub", "jti"])


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.dictionaries(st.sampled_from(["alg", "typ", "kid", "crit", "jku"]), JSON, max_size=3)
    | st.just({"alg": "HS256"}),
    payload=st.dictionaries(CLAIM, JSON, max_size=5) | JSON,
    sign=st.booleans(),
)
def test_any_token_is_a_401_or_a_pass(header: dict[str, Any], payload: Any, sign: bool) -> None:
    """InvokeAuth.check on hand-made tokens (with arbitrary JSON claims, correctly signed or not)
    raises only the 401 errors, so no token can make the server answer 500."""
    if sign:
        header = {**header, "alg": "HS256"}
    checker = _AUD_CHECK
    t = handmade(header, payload, SECRET.encode() if sign else None)
    try:
        claims = checker.check({"authorization": f"Bearer {t}"})
    except InvokeUnauthorized as e:
        assert e.status == 401 and e.code in ("invalid_token", "token_expired", "token_not_yet_valid")
    else:
        assert isinstance(claims, dict) and claims.get("aud") is not None


_AUD_CHECK = InvokeAuth(parse_manifest(json.dumps({"auth": FUNCTIONS["aud"]})).auth)
