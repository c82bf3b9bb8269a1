"""JWT auth with asymmetric keys on a real server: a function whose `auth.jwt.jwks_url` names a JWKS served
by a real HTTP server on 127.0.0.1, tokens signed here (ES256, RS256, EdDSA keys generated for the run,
PyJWT), the verified claims as the guest sees them (the echo guest returns its request envelope), a
client's own x-hive-auth-claims never reaching any guest, key rotation, a JWKS outage (503, never an
accepted token), and an inline JWKS.

The server keeps one JWKS cache per worker and refetches a URL at most every 10 s (hive.jwks), so the
rotation and recovery tests poll, bounded, until that has passed."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from hive import abi
from tests.guests import ECHO_WAT, wat
from tests.http.test_fastpath import Conn, chunked, escaped, req
from tests.security.test_jwks import JwksServer, public_jwk
from tests.support import Server, start_server

pytestmark = pytest.mark.slow

AUD, ISS = "authenticated", "https://project.supabase.co/auth/v1"
SECRET = "hs256-secret-" + "0123456789abcdef" * 3
API_KEY = "api-key-" + "a" * 24
CLAIMS = "x-hive-auth-claims"
FORGED = '{"sub":"admin","role":"service_role"}'
REFRESH_WAIT_S = 40  # the cache refetches a URL at most every 10 s; this bounds the polls past that

ES256_K1 = ec.generate_private_key(ec.SECP256R1())
ES256_K2 = ec.generate_private_key(ec.SECP256R1())
ES256_OTHER = ec.generate_private_key(ec.SECP256R1())
RS256_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EDDSA_KEY = ed25519.Ed25519PrivateKey.generate()


def sign(key: Any, alg: str, kid: str | None = None, exp: int = 300, **claims: Any) -> str:
    payload = {
        "sub": "user-1",
        "role": "authenticated",
        "aud": AUD,
        "iss": ISS,
        "exp": int(time.time()) + exp,
        **claims,
    }
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid} if kid else None)


def decoded(t: str) -> dict[str, Any]:
    return jwt.decode(t, options={"verify_signature": False})


@pytest.fixture(scope="module")
def jwks() -> Iterator[JwksServer]:
    s = JwksServer(body={"keys": [public_jwk(ES256_K1, "k1")]}).start()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def dead_url() -> str:
    """A JWKS URL whose server was stopped before anything fetched from it."""
    s = JwksServer(body={"keys": [public_jwk(ES256_K1, "k1")]}).start()
    url = s.url
    s.stop()
    return url


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, jwks: JwksServer, dead_url: str) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("jwks") / "data", workers=1)
    echo = wat(ECHO_WAT)
    url_jwt = {"jwks_url": jwks.url, "audience": AUD, "issuer": ISS}
    inline = {"keys": [public_jwk(RS256_KEY, "rsa-1"), public_jwk(EDDSA_KEY, "ed-1")]}
    deploys: list[tuple[str, dict[str, Any] | None]] = [
        ("byurl", {"auth": {"mode": "jwt", "jwt": url_jwt}}),
        ("rotating", {"auth": {"mode": "jwt", "jwt": {"jwks_url": jwks.url.replace("/jwks.json", "/jwks.json?r")}}}),
        *((f"first{i}", {"auth": {"mode": "jwt", "jwt": {"jwks_url": f"{jwks.url}?first{i}"}}}) for i in range(3)),
        ("dead", {"auth": {"mode": "jwt", "jwt": {"jwks_url": dead_url}}}),
        ("inline", {"auth": {"mode": "jwt", "jwt": {"jwks": inline, "audience": AUD}}}),
        ("hs", {"auth": {"mode": "jwt", "jwt": {"hs256_secret": SECRET}}}),
        ("keyed", {"auth": {"mode": "api_key", "api_keys": [API_KEY]}}),
        ("public", None),
    ]
    for name, manifest in deploys:
        r = s.deploy(name, echo, json.dumps(manifest) if manifest else None)
        assert r.status_code == 201, (name, r.text)
    yield s
    s.stop()


def call(
    server: Server,
    target: str,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    method: str = "POST",
    body: bytes = b"",
) -> tuple[int, list[tuple[str, str]], bytes]:
    pairs = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    head = "".join(f"{k}: {v}\r\n" for k, v in pairs)
    raw = req(method, target, body).replace(b"\r\n\r\n", b"\r\n" + head.encode() + b"\r\n", 1)
    with Conn(server) as c:
        c.send(raw)
        return c.response()


def targets(name: str) -> list[str]:
    """The fast path, the Starlette route and the Supabase-style path to one function."""
    return [f"/api/v1/edge/{name}", f"/api/v1/edge/{escaped(name)}", f"/functions/v1/{name}"]


def claims_seen(body: bytes) -> list[str]:
    """Every x-hive-auth-claims header the guest got (any case)."""
    return [v.decode() for k, v in abi.decode_request(body).headers if k.lower() == CLAIMS.encode()]


def bearer(t: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {t}"}


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


def test_es256_tokens_from_a_jwks_url_are_accepted_and_the_guest_gets_the_claims(server: Server) -> None:
    t = sign(ES256_K1, "ES256", "k1", email="a@example.com", app_metadata={"provider": "email"}, name="Zoë")
    for target in targets("byurl"):
        status, _, body = call(server, target, bearer(t))
        assert status == 200, (target, body)
        seen = claims_seen(body)
        assert len(seen) == 1 and json.loads(seen[0]) == decoded(t)
        assert seen[0].isascii()  # non-ASCII claims arrive as \u escapes: always a valid header value


@pytest.mark.parametrize("case", ["other-key", "wrong-aud", "wrong-iss", "expired", "no-kid-other-key", "hs256"])
def test_bad_tokens_are_refused_and_never_reach_the_guest(server: Server, case: str) -> None:
    t = {
        "other-key": sign(ES256_OTHER, "ES256", "k1"),
        "wrong-aud": sign(ES256_K1, "ES256", "k1", aud="anon"),
        "wrong-iss": sign(ES256_K1, "ES256", "k1", iss="https://evil.example"),
        "expired": sign(ES256_K1, "ES256", "k1", exp=-120),
        "no-kid-other-key": sign(ES256_OTHER, "ES256"),
        "hs256": sign(SECRET, "HS256", "k1"),
    }[case]
    for target in targets("byurl"):
        status, headers, body = call(server, target, bearer(t))
        assert status == 401, (case, target, body)
        assert error_of(body) in ("invalid_token", "token_expired")
        assert dict(headers).get("x-relay-error") == "true"


@pytest.mark.parametrize("name", ["public", "keyed", "hs", "byurl"])
def test_a_client_sent_claims_header_never_reaches_the_guest(server: Server, name: str) -> None:
    # Tokens are signed here, not at collection: a long session must not find them expired.
    creds = {
        "public": lambda: {},
        "keyed": lambda: {"apikey": API_KEY},
        "hs": lambda: bearer(sign(SECRET, "HS256")),
        "byurl": lambda: bearer(sign(ES256_K1, "ES256", "k1")),
    }[name]()
    forged = [(CLAIMS, FORGED), ("X-Hive-Auth-Claims", FORGED), ("X-HIVE-AUTH-CLAIMS", '{"role":"x"}')]
    for target in targets(name):
        for sent in ([forged[0]], forged):
            status, _, body = call(server, target, [*creds.items(), *sent])
            assert status == 200, (name, target, body)
            seen = claims_seen(body)
            assert FORGED not in seen and '{"role":"x"}' not in seen, (name, target, seen)
            if name in ("hs", "byurl"):  # only the host's header, from the verified token
                token = creds["Authorization"].split()[1]
                assert len(seen) == 1 and json.loads(seen[0]) == decoded(token)
            else:
                assert seen == []


def test_the_first_request_waits_for_the_keys_and_keeps_its_body(server: Server) -> None:
    """The first token for a URL makes its request wait for the fetch; its body, sent meanwhile, reaches
    the guest whole: through the fast path, the Starlette route, and as a chunked body."""
    payload = bytes(range(256)) * 160  # 40 KiB (what the echo guest holds): several reads
    t = sign(ES256_K1, "ES256", "k1", n=1)
    for target in ["/api/v1/edge/first0", f"/api/v1/edge/{escaped('first1')}"]:
        status, _, body = call(server, target, bearer(t), body=payload)
        assert status == 200, (target, body[:200])
        seen = abi.decode_request(body)
        assert seen.body == payload and json.loads(claims_seen(body)[0])["n"] == 1
    with Conn(server) as c:
        c.send(
            req(
                "POST",
                "/api/v1/edge/first2",
                chunked(payload[:30000], payload[30000:]),
                {**bearer(t), "Transfer-Encoding": "chunked"},
            )
        )
        status, _, body = c.response()
    assert status == 200 and abi.decode_request(body).body == payload


def test_inline_jwks_with_rs256_and_eddsa_keys(server: Server) -> None:
    for key, alg, kid in ((RS256_KEY, "RS256", "rsa-1"), (EDDSA_KEY, "EdDSA", "ed-1")):
        for t in (sign(key, alg, kid), sign(key, alg)):  # with its kid, and without one
            for target in targets("inline"):
                status, _, body = call(server, target, bearer(t))
                assert status == 200, (alg, target, body)
                assert json.loads(claims_seen(body)[0]) == decoded(t)
        status, _, body = call(server, "/api/v1/edge/inline", bearer(sign(key, alg, kid, aud="anon")))
        assert status == 401 and error_of(body) == "invalid_token"
    # a key type the set does not hold, and the other key's kid
    assert call(server, "/api/v1/edge/inline", bearer(sign(ES256_K1, "ES256", "rsa-1")))[0] == 401
    other = ed25519.Ed25519PrivateKey.generate()
    assert call(server, "/api/v1/edge/inline", bearer(sign(other, "EdDSA", "ed-1")))[0] == 401


def test_a_jwks_outage_before_any_fetch_is_a_503_never_a_pass(server: Server) -> None:
    t = sign(ES256_K1, "ES256", "k1")  # signed by the key the stopped server would have published
    for target in targets("dead") * 2:
        for headers in (bearer(t), bearer(sign(ES256_K1, "ES256"))):
            status, got, body = call(server, target, headers)
            assert status == 503, (target, status, body)
            assert error_of(body) == "jwks_unavailable"
            h = dict(got)
            assert h.get("retry-after", "").isdigit() and h.get("x-relay-error") == "true"
            assert "127.0.0.1" not in body.decode()  # the URL and the failure are for the log, not the client
    # a missing token is still the caller's 401, outage or not
    status, _, body = call(server, "/api/v1/edge/dead")
    assert status == 401 and error_of(body) == "missing_credentials"


def poll_status(
    server: Server, target: str, headers: dict[str, str], want: int, allowed: tuple[int, ...]
) -> tuple[int, bytes]:
    """Until `target` answers `want` (bounded); every answer before it must be one of `allowed`."""
    deadline = time.monotonic() + REFRESH_WAIT_S
    while True:
        status, _, body = call(server, target, headers)
        if status == want:
            return status, body
        assert status in allowed, (status, body)
        assert time.monotonic() < deadline, f"still {status} after {REFRESH_WAIT_S} s: {body!r}"
        time.sleep(0.25)  # polling interval, not a wait for an event


def test_key_rotation_a_new_kid_is_accepted_after_a_refresh(server: Server, jwks: JwksServer) -> None:
    target = "/api/v1/edge/rotating"
    old = sign(ES256_K1, "ES256", "k1")
    status, _, body = call(server, target, bearer(old))
    assert status == 200, body  # the first request fetched the set
    jwks.body = {"keys": [public_jwk(ES256_K2, "k2")]}  # the provider rotates: k1 retired, k2 signs
    new = sign(ES256_K2, "ES256", "k2", session_id="after-rotation")
    hits = jwks.hits
    # Until the cache may refetch, an unknown kid is a 401 (never a 5xx, never a pass); then one fetch finds k2.
    _, body = poll_status(server, target, bearer(new), 200, (401,))
    assert json.loads(claims_seen(body)[0])["session_id"] == "after-rotation"
    assert jwks.hits > hits
    for t in targets("rotating")[1:]:
        assert call(server, t, bearer(new))[0] == 200
    # the retired key's kid is unknown now: refused
    status, _, body = call(server, target, bearer(old))
    assert status == 401 and error_of(body) == "invalid_token", body


def test_a_jwks_url_must_be_https_or_a_loopback_ip(server: Server) -> None:
    for url in (
        "http://example.com/jwks.json",
        "http://localhost:8000/jwks.json",
        "ftp://127.0.0.1/jwks",
        "https://user:pw@example.com/jwks.json",
        "not a url",
    ):
        r = server.deploy("badurl", wat(ECHO_WAT), json.dumps({"auth": {"mode": "jwt", "jwt": {"jwks_url": url}}}))
        assert r.status_code == 422 and r.json()["error"] == "invalid_manifest", (url, r.text)
        assert "jwks_url" in r.json()["message"]
