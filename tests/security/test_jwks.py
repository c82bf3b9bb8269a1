"""JWT auth with asymmetric keys (ES256, ES384, RS256, EdDSA) from an inline JWKS or a JWKS URL, at the
library level: InvokeAuth and JwksCache driven the way the invocation core drives them (check; on
KeysNeeded, await refresh and check once more), the URL served by a real HTTP server on 127.0.0.1.

Keys are generated here with `cryptography`, tokens signed with PyJWT. Time-dependent behaviour (TTL,
the refresh rate limit, stale keys) runs on an injected clock, so nothing waits or measures time.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

from hive.errors import HiveError, InvalidManifest
from hive.manifest import parse_manifest
from hive.policy import (
    CLAIMS_HEADER,
    MAX_CLAIMS_BYTES,
    InvokeAuth,
    InvokeUnauthorized,
    JwksCache,
    JwksUnavailable,
    KeysNeeded,
    claims_header,
)

AUD, ISS = "authenticated", "https://project.supabase.co/auth/v1"
SECRET = "hs256-secret-" + "0123456789abcdef" * 3 + "-end"

KEYS: dict[str, Any] = {  # alg -> private key
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "ES384": ec.generate_private_key(ec.SECP384R1()),
    "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
}
OTHER_KEYS: dict[str, Any] = {
    "ES256": ec.generate_private_key(ec.SECP256R1()),
    "ES384": ec.generate_private_key(ec.SECP384R1()),
    "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
    "EdDSA": ed25519.Ed25519PrivateKey.generate(),
}
ALGS = list(KEYS)


def public_jwk(private: Any, kid: str | None = None, **extra: Any) -> dict[str, Any]:
    pub = private.public_key()
    if isinstance(pub, rsa.RSAPublicKey):
        jwk = RSAAlgorithm.to_jwk(pub, as_dict=True)
    elif isinstance(pub, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(pub, as_dict=True)
    else:
        jwk = OKPAlgorithm.to_jwk(pub, as_dict=True)
    return {**jwk, **({"kid": kid} if kid else {}), **extra}


def private_jwk(private: Any, kid: str) -> dict[str, Any]:
    algo = {rsa.RSAPrivateKey: RSAAlgorithm, ec.EllipticCurvePrivateKey: ECAlgorithm}
    cls = next((a for t, a in algo.items() if isinstance(private, t)), OKPAlgorithm)
    return {**cls.to_jwk(private, as_dict=True), "kid": kid}


def pem(private: Any) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def jwks_of(**kid_to_alg: str) -> dict[str, Any]:
    return {"keys": [public_jwk(KEYS[alg], kid) for kid, alg in kid_to_alg.items()]}


INLINE = {"keys": [public_jwk(KEYS[alg], f"kid-{alg}") for alg in ALGS]}


def token(alg: str, kid: str | None = None, key: Any = None, exp: int | None = 300, **claims: Any) -> str:
    now = int(time.time())
    payload = {"sub": "user-1", "role": "authenticated", **claims}
    if exp is not None:
        payload["exp"] = now + exp
    headers = {"kid": kid} if kid else None
    return jwt.encode(payload, KEYS[alg] if key is None else key, algorithm=alg, headers=headers)


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def handmade(header: dict[str, Any], payload: Any, hmac_key: bytes | None = None, sign: Any = None) -> str:
    """A JWT built by hand: HMAC-SHA256 with `hmac_key`, signed by `sign(signing_input)`, or unsigned."""
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(payload).encode())}".encode()
    if hmac_key is not None:
        sig = hmac.new(hmac_key, signing_input, hashlib.sha256).digest()
    elif sign is not None:
        sig = sign(signing_input)
    else:
        sig = b""
    return f"{signing_input.decode()}.{_b64(sig)}"


def bearer(t: str) -> dict[str, str]:
    return {"authorization": f"Bearer {t}"}


def auth_for(jwt_conf: dict[str, Any], cache: JwksCache | None = None) -> InvokeAuth:
    return InvokeAuth(parse_manifest(json.dumps({"auth": {"mode": "jwt", "jwt": jwt_conf}})).auth, cache)


def refused(auth: InvokeAuth, t: str, code: str = "invalid_token") -> InvokeUnauthorized:
    with pytest.raises(InvokeUnauthorized) as e:
        auth.check(bearer(t))
    assert (e.value.status, e.value.code) == (401, code), e.value.message
    return e.value


# ---- the inline JWKS -----------------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ALGS)
def test_each_key_type_verifies_its_tokens(alg: str) -> None:
    auth = auth_for({"jwks": INLINE, "audience": AUD, "issuer": ISS})
    claims = auth.check(bearer(token(alg, f"kid-{alg}", aud=AUD, iss=ISS, email="a@example.com")))
    assert claims is not None and claims["sub"] == "user-1" and claims["email"] == "a@example.com"
    # Without a kid, the keys of the token's algorithm are tried.
    assert auth.check(bearer(token(alg, aud=AUD, iss=ISS)))["sub"] == "user-1"  # type: ignore[index]


@pytest.mark.parametrize("alg", ALGS)
def test_tokens_signed_by_another_key_are_refused(alg: str) -> None:
    auth = auth_for({"jwks": INLINE})
    refused(auth, token(alg, f"kid-{alg}", key=OTHER_KEYS[alg]))
    refused(auth, token(alg, key=OTHER_KEYS[alg]))
    refused(auth, token(alg, f"kid-{alg}")[:-4] + "AAAA")  # a tampered signature


@pytest.mark.parametrize("alg", ALGS)
def test_claims_are_checked_for_every_key_type(alg: str) -> None:
    auth = auth_for({"jwks": INLINE, "audience": AUD, "issuer": ISS})
    kid = f"kid-{alg}"
    for bad in [
        token(alg, kid, iss=ISS),
        token(alg, kid, aud="anon", iss=ISS),
        token(alg, kid, aud=AUD),
        token(alg, kid, aud=AUD, iss="https://evil.example"),
        token(alg, kid, exp=None, aud=AUD, iss=ISS),
    ]:
        refused(auth, bad)
    refused(auth, token(alg, kid, exp=-60, aud=AUD, iss=ISS), "token_expired")
    refused(auth, token(alg, kid, aud=AUD, iss=ISS, nbf=int(time.time()) + 600), "token_not_yet_valid")


def test_a_kid_that_names_a_key_of_another_type_is_refused() -> None:
    auth = auth_for({"jwks": INLINE})
    refused(auth, token("ES256", "kid-RS256"))  # signed by the ES256 key but naming the RSA key
    refused(auth, token("ES384", "kid-ES256", key=ec.generate_private_key(ec.SECP384R1())))
    refused(auth, token("ES256", "kid-unknown"))  # an unknown kid: no key of an inline set matches
    assert auth.check(bearer(token("ES256", "kid-ES256"))) is not None


def test_alg_confusion_a_public_key_is_never_an_hmac_secret() -> None:
    """HS256 tokens "signed" with a public key (as PEM, as JWK JSON, as raw bytes) as the HMAC secret."""
    rsa_pem = pem(KEYS["RS256"])
    claims = {"sub": "attacker", "exp": int(time.time()) + 300}
    secrets = [
        rsa_pem.encode(),
        pem(KEYS["ES256"]).encode(),
        json.dumps(public_jwk(KEYS["RS256"])).encode(),
        json.dumps(INLINE).encode(),
        KEYS["EdDSA"].public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
    ]
    only_public = [auth_for({"jwks": INLINE}), auth_for({"rs256_public_key": rsa_pem, "jwks": INLINE})]
    with_secret = auth_for({"hs256_secret": SECRET, "rs256_public_key": rsa_pem, "jwks": INLINE})
    for secret in secrets:
        for header in [
            {"alg": "HS256", "typ": "JWT"},
            {"alg": "HS256", "kid": "kid-RS256"},
            {"alg": "HS256", "kid": "kid-ES256"},
        ]:
            t = handmade(header, claims, hmac_key=secret)
            for auth in only_public:
                assert "not accepted" in refused(auth, t).message  # HS256 isn't accepted at all
            refused(with_secret, t)  # HS256 is, but only with the configured secret
    assert with_secret.check(bearer(jwt.encode(claims, SECRET, algorithm="HS256", headers={"kid": "kid-RS256"})))


def test_unsigned_and_unsupported_algorithms_are_refused() -> None:
    auth = auth_for({"jwks": INLINE, "hs256_secret": SECRET})
    claims = {"sub": "x", "exp": int(time.time()) + 300}
    for header in [
        {"alg": "none"},
        {"alg": "None"},
        {"alg": "NONE", "kid": "kid-ES256"},
        {"alg": "none", "typ": "JWT"},
        {"kid": "kid-ES256"},
        {"alg": ""},
        {"alg": None},
        {"alg": ["ES256"]},
        {"alg": {"a": 1}},
    ]:
        refused(auth, handmade(header, claims))
    rsa_key = KEYS["RS256"]
    for alg in ["RS384", "RS512", "PS256"]:  # RSA, but not the algorithm the key verifies
        refused(auth, jwt.encode(claims, rsa_key, algorithm=alg, headers={"kid": "kid-RS256"}))
    signer = ECAlgorithm(ECAlgorithm.SHA256)
    refused(auth, handmade({"alg": "ES256", "kid": 7}, claims, sign=lambda m: signer.sign(m, KEYS["ES256"])))
    refused(auth, jwt.encode(claims, SECRET, algorithm="HS512"))


def test_old_style_keys_work_unchanged_beside_a_jwks() -> None:
    rsa_pem = pem(KEYS["RS256"])
    for conf in [{"hs256_secret": SECRET}, {"rs256_public_key": rsa_pem}, {"hs256_secret": SECRET, "jwks": INLINE}]:
        auth = auth_for(conf)
        if "hs256_secret" in conf:
            assert auth.check(bearer(jwt.encode({"exp": int(time.time()) + 60}, SECRET, algorithm="HS256")))
        else:
            assert auth.check(bearer(token("RS256", "any-kid")))  # a PEM key names no kid: any kid may use it


# ---- the claims header ------------------------------------------------------------------------------------


def test_claims_header_is_compact_ascii_json_of_the_claims() -> None:
    auth = auth_for({"jwks": INLINE})
    claims = auth.check(
        bearer(
            token(
                "ES256",
                "kid-ES256",
                name="Zoë 🐝",
                app_metadata={"provider": "email"},
                amr=[{"method": "password", "timestamp": 1}],
            )
        )
    )
    assert claims is not None
    value = claims_header(claims)
    assert CLAIMS_HEADER == "x-hive-auth-claims"
    assert value.isascii() and b'": ' not in value and b", " not in value and b"\n" not in value
    assert json.loads(value) == claims
    assert b'"name":"Zo\\u00eb \\ud83d\\udc1d"' in value


def test_claims_too_big_or_not_plain_json_are_refused_before_the_guest() -> None:
    auth = auth_for({"jwks": INLINE})
    fits = token("ES256", "kid-ES256", pad="x" * (MAX_CLAIMS_BYTES - 200))
    assert len(claims_header(auth.check(bearer(fits)))) <= MAX_CLAIMS_BYTES  # type: ignore[arg-type]
    assert "exceed" in refused(auth, token("ES256", "kid-ES256", pad="x" * MAX_CLAIMS_BYTES)).message
    assert "exceed" in refused(auth, token("ES256", "kid-ES256", pad="é" * (MAX_CLAIMS_BYTES // 5))).message
    # Python's json reads Infinity and NaN: a validly signed token carrying them never reaches the guest.
    signer = ECAlgorithm(ECAlgorithm.SHA256)
    for raw in ['{"sub":"x","exp":%d,"n":Infinity}', '{"sub":"x","exp":%d,"n":NaN}']:
        body = raw % (int(time.time()) + 300)
        signing_input = f"{_b64(json.dumps({'alg': 'ES256', 'kid': 'kid-ES256'}).encode())}.{_b64(body.encode())}"
        t = f"{signing_input}.{_b64(signer.sign(signing_input.encode(), KEYS['ES256']))}"
        assert "plain JSON" in refused(auth, t).message


# ---- deploy-time validation ---------------------------------------------------------------------------------


def _manifest_error(jwt_conf: dict[str, Any]) -> str:
    with pytest.raises(InvalidManifest) as e:
        parse_manifest(json.dumps({"auth": {"mode": "jwt", "jwt": jwt_conf}}))
    assert (e.value.status, e.value.code) == (422, "invalid_manifest")
    return e.value.message


BAD_JWKS: list[tuple[Any, str]] = [
    ({}, 'must be a JSON object {"keys": [...]}'),
    ({"keys": {}}, 'must be a JSON object {"keys": [...]}'),
    ({"keys": []}, "has no keys"),
    ({"keys": ["not a key"]}, "key 0 is not a JSON object"),
    ({"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": "s"}]}, "symmetric (oct) keys are not accepted"),
    ({"keys": [private_jwk(KEYS["ES256"], "p")]}, "key 0 is a private key"),
    ({"keys": [public_jwk(KEYS["RS256"], "a"), private_jwk(KEYS["RS256"], "p")]}, "key 1 is a private key"),
    ({"keys": [public_jwk(ec.generate_private_key(ec.SECP521R1()), "x")]}, "curve 'P-521'"),
    ({"keys": [public_jwk(ec.generate_private_key(ec.SECP256K1()), "x")]}, "curve 'secp256k1'"),
    (
        {
            "keys": [
                {
                    **public_jwk(KEYS["EdDSA"], "x"),
                    "crv": "Ed448",
                    "x": _b64(
                        ed448.Ed448PrivateKey.generate()
                        .public_key()
                        .public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
                    ),
                }
            ]
        },
        "curve 'Ed448'",
    ),
    ({"keys": [public_jwk(rsa.generate_private_key(public_exponent=65537, key_size=1024), "x")]}, "1024-bit RSA"),
    ({"keys": [public_jwk(KEYS["RS256"], "x", alg="HS256")]}, "says alg 'HS256'"),
    ({"keys": [public_jwk(KEYS["RS256"], "x", alg="RS512")]}, "verifies RS256 only"),
    ({"keys": [public_jwk(KEYS["ES256"], "x", alg="ES384")]}, "verifies ES256 only"),
    ({"keys": [public_jwk(KEYS["ES256"], "x", use="enc")]}, "use 'sig'"),
    ({"keys": [public_jwk(KEYS["ES256"], "x", key_ops=["encrypt"])]}, "key_ops"),
    ({"keys": [public_jwk(KEYS["ES256"], 7)]}, "kid must be a string"),  # type: ignore[arg-type]
    ({"keys": [{**public_jwk(KEYS["ES256"]), "kid": ""}]}, "kid must be a string"),
    ({"keys": [public_jwk(KEYS["ES256"], "same"), public_jwk(KEYS["ES384"], "same")]}, "same kid"),
    ({"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}]}, "not a valid EC public key"),
    ({"keys": [{"kty": "RSA", "n": "AQAB"}]}, "not a valid RSA public key"),
    ({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "not base64url!"}]}, "not a valid OKP public key"),
    ({"keys": [{"crv": "P-256"}]}, "key type None"),
    ({"keys": [public_jwk(KEYS["ES256"], f"k{i}") for i in range(65)]}, "at most 64"),
]


@pytest.mark.parametrize(("jwks", "why"), BAD_JWKS, ids=[w for _, w in BAD_JWKS])
def test_bad_inline_jwks_is_an_invalid_manifest(jwks: Any, why: str) -> None:
    message = _manifest_error({"jwks": jwks})
    assert message.startswith("auth.jwt.jwks ") and why in message, message
    assert "ES256, ES384" in message  # says what is supported


BAD_URLS = [
    "http://example.com/jwks.json",
    "http://localhost:8080/jwks",
    "http://10.0.0.1/jwks",
    "http://[fe80::1]/jwks",
    "ftp://example.com/jwks",
    "https://",
    "https:///path",
    "example.com/jwks",
    "https://user:pw@example.com/jwks",
    "https://example.com/jwks#frag",
    "https://example.com:99999/",
    "https://exa mple.com/",
    "https://example.com/\n",
    "https://example.com/" + "a" * 2048,
    "file:///etc/passwd",
]


@pytest.mark.parametrize("url", BAD_URLS)
def test_bad_jwks_url_is_an_invalid_manifest(url: str) -> None:
    message = _manifest_error({"jwks_url": url})
    assert message.startswith("auth.jwt.jwks_url must be an https:// URL"), message


def test_good_jwks_config_is_accepted() -> None:
    for conf in [
        {"jwks": INLINE},
        {"jwks_url": "https://abc.supabase.co/auth/v1/.well-known/jwks.json"},
        {"jwks_url": "http://127.0.0.1:8999/jwks"},
        {"jwks_url": "http://127.8.9.1/jwks"},
        {"jwks_url": "http://[::1]:8999/jwks"},
        {"hs256_secret": SECRET, "jwks": INLINE, "jwks_url": "https://auth.example/jwks", "audience": AUD},
        {
            "jwks": {
                "keys": [public_jwk(KEYS["RS256"], alg="RS256", use="sig", key_ops=["verify"])],
                "extra": "members of the set are allowed",
            }
        },
    ]:
        m = parse_manifest(json.dumps({"auth": {"mode": "jwt", "jwt": conf}}))
        assert m.auth.jwt is not None and m.public_view()["auth"] == "jwt"
    assert "jwks (inline) or jwks_url" in _manifest_error({"audience": AUD})
    assert "invalid manifest" in _manifest_error({"jwks": [public_jwk(KEYS["ES256"])]})  # not an object


def test_a_stored_manifest_round_trips_through_the_registry_encoding() -> None:
    import msgspec

    from hive.manifest import Manifest

    m = parse_manifest(
        json.dumps({"auth": {"mode": "jwt", "jwt": {"jwks": INLINE, "jwks_url": "https://a.example/j"}}})
    )
    again = msgspec.msgpack.decode(msgspec.msgpack.encode(m), type=Manifest)
    assert again == m
    assert InvokeAuth(again.auth, JwksCache()).check(bearer(token("EdDSA", "kid-EdDSA"))) is not None


# ---- a JWKS URL on a real HTTP server ------------------------------------------------------------------------


@dataclass
class JwksServer:
    """Serves `body` (a JWKS, or raw bytes) with `status` at /jwks.json; counts the GETs."""

    body: Any = field(default_factory=lambda: jwks_of(**{"k1": "ES256"}))
    status: int = 200
    hits: int = 0
    hold: threading.Event | None = None  # when set: answer only once it is set (or after 30 s)
    httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.httpd is not None
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/jwks.json"

    def start(self) -> JwksServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                server.hits += 1
                if server.hold is not None:
                    server.hold.wait(30)
                raw = server.body if isinstance(server.body, bytes) else json.dumps(server.body).encode()
                self.send_response(server.status)
                if server.status in (301, 302):
                    self.send_header("location", "/jwks.json")
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, args=(0.02,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.httpd is not None:
            if self.hold is not None:
                self.hold.set()
            self.httpd.shutdown()
            self.httpd.server_close()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def server() -> Iterator[JwksServer]:
    s = JwksServer().start()
    yield s
    s.stop()


@pytest.fixture
def clock() -> Clock:
    return Clock()


def cache_for(clock: Clock, **kw: float) -> JwksCache:
    return JwksCache(**{"ttl_s": 300, "min_refresh_s": 10, "max_stale_s": 3600, "timeout_s": 5, **kw}, clock=clock)


def check_as_core(auth: InvokeAuth, t: str) -> tuple[dict[str, Any] | None, bool]:
    """What the invocation core does: check; on KeysNeeded await refresh and check exactly once more.
    The claims, and whether a fetch was asked for."""
    try:
        return auth.check(bearer(t)), False
    except KeysNeeded as need:
        asyncio.run(auth.refresh(need))
    return auth.check(bearer(t)), True


def unavailable(auth: InvokeAuth, t: str) -> JwksUnavailable:
    """The token gets the 503 (through the core's path), and that is not a request to fetch."""
    with pytest.raises(JwksUnavailable) as e:
        check_as_core(auth, t)
    err = e.value
    assert not isinstance(err, KeysNeeded)
    assert (err.status, err.code) == (503, "jwks_unavailable") and isinstance(err, HiveError)
    assert int(err.headers["retry-after"]) >= 1
    assert "127.0.0.1" not in err.message and "127.0.0.1" in err.detail  # the URL is for the log only
    return err


def test_keys_are_fetched_on_first_use_then_served_from_the_cache(server: JwksServer, clock: Clock) -> None:
    auth = auth_for({"jwks_url": server.url, "audience": AUD}, cache_for(clock))
    with pytest.raises(KeysNeeded) as e:
        auth.check(bearer(token("ES256", "k1", aud=AUD)))
    assert e.value.url == server.url and (e.value.status, e.value.code) == (503, "jwks_unavailable")
    claims, fetched = check_as_core(auth, token("ES256", "k1", aud=AUD))
    assert fetched and claims is not None and claims["sub"] == "user-1" and server.hits == 1
    for _ in range(20):
        assert check_as_core(auth, token("ES256", "k1", aud=AUD))[1] is False
    assert server.hits == 1
    refused(auth, token("ES256", "k1", aud="anon"))
    refused(auth, token("ES256", "k1", aud=AUD, exp=-60), "token_expired")
    refused(auth, token("ES256", "k1", aud=AUD, key=OTHER_KEYS["ES256"]))
    assert server.hits == 1


@pytest.mark.parametrize("alg", ALGS)
def test_every_key_type_from_a_url(server: JwksServer, clock: Clock, alg: str) -> None:
    server.body = {"keys": [public_jwk(KEYS[a], f"kid-{a}") for a in ALGS]}
    auth = auth_for({"jwks_url": server.url, "issuer": ISS}, cache_for(clock))
    assert check_as_core(auth, token(alg, f"kid-{alg}", iss=ISS))[0] is not None
    assert check_as_core(auth, token(alg, iss=ISS))[0] is not None  # no kid: the keys of its algorithm
    refused(auth, token(alg, f"kid-{alg}", iss="https://evil.example"))
    refused(auth, token(alg, f"kid-{alg}", key=OTHER_KEYS[alg], iss=ISS))
    assert server.hits == 1


def test_prefetch_fetches_before_the_first_request(server: JwksServer, clock: Clock) -> None:
    cache = cache_for(clock)
    auth = auth_for({"jwks_url": server.url}, cache)
    asyncio.run(auth.prefetch())
    assert server.hits == 1
    assert check_as_core(auth, token("ES256", "k1"))[1] is False
    asyncio.run(auth.prefetch())  # fresh: nothing to do
    assert server.hits == 1
    # Another version (or function) with the same cache shares the keys.
    other = auth_for({"jwks_url": server.url, "audience": AUD}, cache)
    asyncio.run(other.prefetch())
    assert other.check(bearer(token("ES256", "k1", aud=AUD))) is not None and server.hits == 1
    asyncio.run(auth_for({"hs256_secret": SECRET}).prefetch())  # nothing to fetch: a no-op


def test_key_rotation_a_new_kid_is_fetched_and_accepted(server: JwksServer, clock: Clock) -> None:
    auth = auth_for({"jwks_url": server.url}, cache_for(clock))
    assert check_as_core(auth, token("ES256", "k1"))[0] is not None
    clock.now += 60  # well inside the TTL, past the refresh interval
    server.body = jwks_of(k1="ES256", k2="RS256")  # the provider adds a key, then signs with it
    claims, fetched = check_as_core(auth, token("RS256", "k2"))
    assert fetched and claims is not None and server.hits == 2
    server.body = jwks_of(k2="RS256")  # k1 revoked
    clock.now += 301  # the TTL runs out: the next request refetches
    assert check_as_core(auth, token("RS256", "k2"))[1] is True and server.hits == 3
    refused(auth, token("ES256", "k1"))  # no longer published: refused, and no refetch so soon
    assert server.hits == 3


def test_unknown_kid_refreshes_are_rate_limited(server: JwksServer, clock: Clock) -> None:
    auth = auth_for({"jwks_url": server.url}, cache_for(clock, min_refresh_s=10))
    assert check_as_core(auth, token("ES256", "k1"))[0] is not None
    clock.now += 10
    assert "no key" in _refused_as_core(auth, token("ES256", "nope-1"))
    assert server.hits == 2
    for i in range(50):  # a flood of made-up kids: no fetch until the interval has passed
        assert "no key" in _refused_as_core(auth, token("ES256", f"nope-{i}"))
        clock.now += 0.19
    assert server.hits == 2
    clock.now += 0.6  # 10 s since the last fetch
    with pytest.raises(KeysNeeded):
        auth.check(bearer(token("ES256", "nope-x")))
    assert auth.check(bearer(token("ES256", "k1"))) is not None  # a known kid never waits for a fetch


def _refused_as_core(auth: InvokeAuth, t: str) -> str:
    with pytest.raises(InvokeUnauthorized) as e:
        check_as_core(auth, t)
    assert (e.value.status, e.value.code) == (401, "invalid_token")
    return e.value.message


def test_concurrent_refreshes_share_one_fetch(server: JwksServer, clock: Clock) -> None:
    server.hold = threading.Event()
    cache = cache_for(clock)
    auths = [auth_for({"jwks_url": server.url}, cache) for _ in range(3)]
    needs = []
    for a in auths * 4:
        with pytest.raises(KeysNeeded) as e:
            a.check(bearer(token("ES256", "k1")))
        needs.append((a, e.value))

    async def all_at_once() -> None:
        tasks = [asyncio.ensure_future(a.refresh(n)) for a, n in needs]
        await asyncio.sleep(0)  # every waiter is waiting on the one fetch before the server answers
        server.hold.set()  # type: ignore[union-attr]
        await asyncio.gather(*tasks)

    asyncio.run(all_at_once())
    assert server.hits == 1 and cache.fetches == 1
    assert all(a.check(bearer(token("ES256", "k1"))) is not None for a in auths)
    asyncio.run(auths[0].refresh(needs[0][1]))  # a stale request to fetch (already answered): no fetch
    assert server.hits == 1


def test_jwks_down_from_the_start_is_a_503_never_a_pass(clock: Clock) -> None:
    down = JwksServer().start()
    url = down.url
    down.stop()  # nothing listens on the port now
    auth = auth_for({"jwks_url": url}, cache_for(clock))
    err = unavailable(auth, token("ES256", "k1"))
    assert "ConnectError" in err.detail
    for _ in range(5):  # within the interval: an immediate 503, no new attempt
        with pytest.raises(JwksUnavailable) as e:
            auth.check(bearer(token("ES256", "k1")))
        assert not isinstance(e.value, KeysNeeded)
    assert auth.jwks is not None and auth.jwks.fetches == 1
    clock.now += 10
    unavailable(auth, token("ES256", "k1"))
    assert auth.jwks.fetches == 2


def test_an_outage_after_keys_were_cached(clock: Clock) -> None:
    s = JwksServer().start()
    auth = auth_for({"jwks_url": s.url}, cache_for(clock, ttl_s=300, max_stale_s=3600))
    assert check_as_core(auth, token("ES256", "k1"))[0] is not None
    s.stop()
    clock.now += 20
    assert auth.check(bearer(token("ES256", "k1"))) is not None  # a known kid: the cached keys
    err = unavailable(auth, token("ES256", "k-rotated"))  # unknown kid, and the refetch failed: a 503
    assert "ConnectError" in err.detail
    clock.now += 600  # past the TTL: the refetch fails, the last good keys keep serving
    with pytest.raises(KeysNeeded) as e:
        auth.check(bearer(token("ES256", "k1")))
    asyncio.run(auth.refresh(e.value))
    assert auth.jwks is not None and auth.jwks.fetches == 3
    assert auth.check(bearer(token("ES256", "k1"))) is not None
    refused(auth, token("ES256", "k1", key=OTHER_KEYS["ES256"]))  # stale keys still verify signatures
    clock.now += 3600  # beyond max_stale_s: too old to trust
    unavailable(auth, token("ES256", "k1"))
    with pytest.raises(JwksUnavailable):
        auth.check(bearer(token("ES256", "k1", key=OTHER_KEYS["ES256"])))  # never a pass, whatever the token


@pytest.mark.parametrize(
    ("status", "body", "why"),
    [
        (500, {"error": "boom"}, "HTTP 500"),
        (404, b"not found", "HTTP 404"),
        (302, b"", "HTTP 302"),  # redirects are not followed
        (200, b"<html>not json</html>", "not JSON"),
        (200, {"keys": []}, "has no keys"),
        (200, {"nokeys": 1}, "must be a JSON object"),
        (200, {"keys": [{"kty": "oct", "k": "c2VjcmV0c2VjcmV0", "kid": "k1"}]}, "no usable key"),
        (200, {"keys": [private_jwk(KEYS["ES256"], "k1")]}, "no usable key"),
        (200, b"[" * 200_000 + b"]" * 200_000, "larger than"),
        (200, b"[" * 50_000 + b"]" * 50_000, "not JSON"),  # too deep for the parser
    ],
)
def test_an_unusable_jwks_is_an_outage(server: JwksServer, clock: Clock, status: int, body: Any, why: str) -> None:
    server.status, server.body = status, body
    auth = auth_for({"jwks_url": server.url}, cache_for(clock))
    assert why in unavailable(auth, token("ES256", "k1")).detail


def test_a_fetched_set_skips_keys_it_cannot_use(server: JwksServer, clock: Clock) -> None:
    server.body = {
        "keys": [
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hs"},
            public_jwk(ec.generate_private_key(ec.SECP521R1()), "p521"),
            private_jwk(KEYS["RS256"], "priv"),
            public_jwk(KEYS["ES256"], "k1"),
            "junk",
        ]
    }
    auth = auth_for({"jwks_url": server.url}, cache_for(clock))
    assert check_as_core(auth, token("ES256", "k1"))[0] is not None
    # The private RSA key in the set is not used, and an HS256 token naming the oct key is not accepted.
    refused(auth, token("RS256", "priv"))
    refused(auth, handmade({"alg": "HS256", "kid": "hs"}, {"exp": int(time.time()) + 60}, hmac_key=b"secret"))


def test_a_slow_jwks_times_out_as_an_outage(server: JwksServer, clock: Clock) -> None:
    server.hold = threading.Event()  # never set before the client gives up
    auth = auth_for({"jwks_url": server.url}, cache_for(clock, timeout_s=0.3))
    assert "no answer within 0.3 s" in unavailable(auth, token("ES256", "k1")).detail


def test_hs256_tokens_never_wait_for_the_jwks(clock: Clock) -> None:
    """A Supabase project in migration: a legacy HS256 secret beside the new JWKS. HS256 tokens (even with a
    kid) verify with the secret alone, so a JWKS outage doesn't stop them."""
    down = JwksServer().start()
    url = down.url
    down.stop()
    auth = auth_for({"hs256_secret": SECRET, "jwks_url": url}, cache_for(clock))
    t = jwt.encode(
        {"sub": "legacy", "exp": int(time.time()) + 60}, SECRET, algorithm="HS256", headers={"kid": "legacy"}
    )
    assert auth.check(bearer(t)) == {"sub": "legacy", "exp": jwt.decode(t, options={"verify_signature": False})["exp"]}
    assert auth.jwks is not None and auth.jwks.fetches == 0
    unavailable(auth, token("ES256", "k1"))


def test_a_keys_needed_that_escapes_fails_closed(server: JwksServer, clock: Clock) -> None:
    """A caller that never fetches (catching only HiveError) answers a 503, not a 500 or a pass."""
    auth = auth_for({"jwks_url": server.url}, cache_for(clock))
    with pytest.raises(HiveError) as e:
        auth.check(bearer(token("ES256", "k1")))
    assert isinstance(e.value, KeysNeeded) and isinstance(e.value, JwksUnavailable) and e.value.status == 503
    assert server.hits == 0


# ---- no token makes the check fail with anything but a 401 (or the 503 of a missing key set) ------------------

_SIGNER = ECAlgorithm(ECAlgorithm.SHA256)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
_FUZZ_AUTH = auth_for({"jwks": INLINE, "hs256_secret": SECRET, "audience": AUD})


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    header=st.dictionaries(st.sampled_from(["alg", "kid", "typ", "jku", "jwk", "crit"]), _JSON, max_size=3),
    payload=st.dictionaries(st.sampled_from(["exp", "nbf", "iat", "aud", "iss", "sub"]), _JSON, max_size=5) | _JSON,
    sign=st.sampled_from(["es256", "hs256", "none"]),
)
def test_any_token_is_a_401_or_a_pass(header: dict[str, Any], payload: Any, sign: str) -> None:
    if sign == "es256":
        header = {**header, "alg": "ES256", "kid": "kid-ES256"}
        t = handmade(header, payload, sign=lambda m: _SIGNER.sign(m, KEYS["ES256"]))
    elif sign == "hs256":
        t = handmade({**header, "alg": "HS256"}, payload, hmac_key=SECRET.encode())
    else:
        t = handmade(header, payload)
    try:
        claims = _FUZZ_AUTH.check(bearer(t))
    except InvokeUnauthorized as e:
        assert e.status == 401 and e.code in ("invalid_token", "token_expired", "token_not_yet_valid")
    else:
        assert isinstance(claims, dict) and claims.get("aud") is not None
        assert json.loads(claims_header(claims)) == claims
