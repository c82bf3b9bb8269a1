"""JSON Web Key Sets for JWT invoke auth: which public keys a function verifies with, and the per-URL
cache of the JWKS the server fetches for it (Supabase publishes its signing keys this way).

Accepted keys, each tied to one algorithm so a key is only ever used the way its type says (no alg
confusion: an RSA, EC or Ed25519 public key is never an HMAC secret):
    RSA (2048 bits or more) -> RS256    EC P-256 -> ES256    EC P-384 -> ES384    OKP Ed25519 -> EdDSA
Symmetric ("oct") and private keys are refused: a shared secret goes in auth.jwt.hs256_secret, and a
JWKS only ever needs public keys.

The cache never does I/O on the request path. `keys()` is synchronous and answers from memory, or
raises KeysNeeded (fetch first) or JwksUnavailable (503: no usable keys and fetching is failing);
`refresh()` is the coroutine that fetches. Fetches of one URL are coalesced and rate-limited: at most
one per `min_refresh_s`, however many unknown `kid`s arrive. Not thread-safe: one cache per event loop
(worker), used from that loop only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from hive.errors import HiveError, JwksUnavailable, KeysNeeded  # noqa: F401 - re-exported

SUPPORTED_ALGS = ("RS256", "ES256", "ES384", "EdDSA")
MAX_KEYS = 64  # Supabase publishes one to three; more is a mistake, and each is tried at most once
MAX_KID = 256
MAX_URL = 2048
MAX_JWKS_BYTES = 256 * 1024
MIN_RSA_BITS = 2048
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth", "k")
_EC_CURVES = {"P-256": "ES256", "P-384": "ES384"}


class VerifyKey(NamedTuple):
    kid: str | None
    alg: str
    key: Any  # a cryptography public key (bytes for the HS256 secret)


def parse_jwk(jwk: Any) -> VerifyKey:
    """One JWK as a key to verify with; ValueError saying why it can't be one."""
    from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
    from jwt.exceptions import PyJWTError

    if not isinstance(jwk, dict):
        raise ValueError("is not a JSON object")
    kty, kid, alg, use = jwk.get("kty"), jwk.get("kid"), jwk.get("alg"), jwk.get("use")
    if kid is not None and not (isinstance(kid, str) and 0 < len(kid) <= MAX_KID):
        raise ValueError(f"kid must be a string of 1 to {MAX_KID} characters")
    if kty == "oct":
        raise ValueError(
            "symmetric (oct) keys are not accepted from a JWKS; put a shared secret in auth.jwt.hs256_secret"
        )
    if any(m in jwk for m in _PRIVATE_MEMBERS):
        raise ValueError("is a private key: a JWKS must hold only public keys")
    if use is not None and use != "sig":
        raise ValueError(f"has use {use!r}; only signing keys (use 'sig') verify tokens")
    ops = jwk.get("key_ops")
    if ops is not None and not (isinstance(ops, list) and "verify" in ops):
        raise ValueError("has key_ops without 'verify'")
    loader: Callable[[dict[str, Any]], object]  # PyJWT's from_jwk, which returns public or private keys
    kind: type
    if kty == "RSA":
        expected, loader, kind = "RS256", RSAAlgorithm.from_jwk, RSAPublicKey
    elif kty == "EC":
        crv = jwk.get("crv")
        if crv not in _EC_CURVES:
            raise ValueError(f"has curve {repr(crv)[:20]}; supported EC curves: P-256 (ES256), P-384 (ES384)")
        expected, loader, kind = _EC_CURVES[crv], ECAlgorithm.from_jwk, EllipticCurvePublicKey
    elif kty == "OKP":
        if jwk.get("crv") != "Ed25519":
            raise ValueError(f"has curve {repr(jwk.get('crv'))[:20]}; the supported OKP curve is Ed25519 (EdDSA)")
        expected, loader, kind = "EdDSA", OKPAlgorithm.from_jwk, Ed25519PublicKey
    else:
        raise ValueError(f"has key type {repr(kty)[:20]}; supported key types: RSA, EC, OKP")
    if alg is not None and alg != expected:
        raise ValueError(f"says alg {repr(alg)[:20]}, but a {kty} key here verifies {expected} only")
    try:
        key = loader(jwk)
    except (PyJWTError, ValueError, TypeError, KeyError) as e:
        raise ValueError(f"is not a valid {kty} public key ({str(e)[:100]})") from None
    if not isinstance(key, kind):
        raise ValueError(f"is not a {kty} public key")
    if isinstance(key, RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise ValueError(f"is a {key.key_size}-bit RSA key; at least {MIN_RSA_BITS} bits are needed")
    return VerifyKey(kid, expected, key)


def parse_jwks(doc: Any, *, strict: bool) -> list[VerifyKey]:
    """The keys of a JWKS document {"keys": [...]}; ValueError when it is unusable.

    strict (a deploy): every key must be usable and kids unique. Otherwise (a fetched set, which may
    list keys of kinds we don't verify with) unusable keys are skipped, but one usable key is needed."""
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise ValueError('must be a JSON object {"keys": [...]}')
    raw = doc["keys"]
    if not raw:
        raise ValueError("has no keys")
    if len(raw) > MAX_KEYS:
        raise ValueError(f"has {len(raw)} keys; at most {MAX_KEYS}")
    keys, problems = [], []
    for i, jwk in enumerate(raw):
        try:
            keys.append(parse_jwk(jwk))
        except ValueError as e:
            problems.append(f"key {i} {e}")
    if strict and problems:
        raise ValueError(problems[0])
    if not keys:
        raise ValueError(f"has no usable key ({problems[0]})")
    kids = [k.kid for k in keys if k.kid is not None]
    if strict and len(kids) != len(set(kids)):
        raise ValueError("has two keys with the same kid")
    return keys


def check_jwks_url(url: Any) -> str:
    """The URL, or ValueError. https only; http just for a loopback IP literal (127.0.0.0/8, ::1), which
    is what tests and a local identity provider use. A host *name* is never treated as loopback."""
    rule = "must be an https:// URL (http:// is allowed only for a loopback IP such as 127.0.0.1)"
    if not isinstance(url, str) or not 0 < len(url) <= MAX_URL or any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(f"{rule}, at most {MAX_URL} characters")
    try:
        parts = urlsplit(url)
        host, _ = parts.hostname, parts.port  # .port raises on a bad port
    except ValueError:
        raise ValueError(f"{rule}; this one does not parse") from None
    if parts.username is not None or parts.password is not None or parts.fragment:
        raise ValueError(f"{rule}, without user:password@ or #fragment")
    if parts.scheme == "https" and host:
        return url
    if parts.scheme == "http" and host:
        try:
            if ipaddress.ip_address(host).is_loopback:
                return url
        except ValueError:
            pass
    raise ValueError(rule)


class _BadResponse(Exception):
    pass


@dataclass
class _Entry:
    keys: list[VerifyKey] | None = None  # the last good set
    kids: frozenset[str] = frozenset()
    fetched_at: float = -math.inf  # last success
    attempted_at: float = -math.inf  # last attempt (success or not), when it ended
    error: str | None = None  # why the last attempt failed; None after a success
    generation: int = 0  # +1 per attempt: a KeysNeeded from before an attempt is already answered
    inflight: asyncio.Task[None] | None = field(default=None, repr=False)


class JwksCache:
    """JWKS documents by URL, shared by every function (and version) of a worker that names the URL.

    ttl_s: a set is refetched after this long (by the next request that uses it).
    min_refresh_s: the least time between two fetches of one URL (unknown kids, failures, expiry).
    max_stale_s: when refetching fails, the last good set keeps serving this long after its fetch.
    timeout_s: the whole fetch (connect, TLS, response) must finish within it.
    """

    def __init__(
        self,
        *,
        ttl_s: float = 300.0,
        min_refresh_s: float = 10.0,
        max_stale_s: float = 3600.0,
        timeout_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_s, self.min_refresh_s, self.max_stale_s, self.timeout_s = ttl_s, min_refresh_s, max_stale_s, timeout_s
        self.clock = clock
        self.fetches = 0  # attempts made, for tests and stats
        self._entries: dict[str, _Entry] = {}
        self._ssl: Any = None

    def _entry(self, url: str) -> _Entry:
        e = self._entries.get(url)
        if e is None:
            e = self._entries[url] = _Entry()
        return e

    def keys(self, url: str, kid: str | None) -> list[VerifyKey]:
        """The keys to try for a token with this kid (synchronous, no I/O).

        Raises KeysNeeded when a fetch is due (none yet, the set expired, or an unknown kid) and allowed
        by the rate limit; JwksUnavailable when there is no usable set and fetching is failing, or the
        kid is unknown and the refetch that could have found it failed."""
        e = self._entry(url)
        now = self.clock()
        may_fetch = now - e.attempted_at >= self.min_refresh_s
        usable = e.keys is not None and now - e.fetched_at <= self.max_stale_s
        expired = now - e.fetched_at > self.ttl_s
        unknown_kid = kid is not None and kid not in e.kids
        if may_fetch and (not usable or expired or unknown_kid):
            raise KeysNeeded(url, e.generation)
        if not usable or (unknown_kid and e.error is not None):
            wait = max(1, math.ceil(self.min_refresh_s - (now - e.attempted_at)))
            err = JwksUnavailable(
                "this function's JWT signing keys (JWKS) cannot be fetched right now; try again shortly",
                headers={"retry-after": str(wait)},
            )
            err.detail = f"{url}: {e.error or 'no keys yet'}"
            raise err
        assert e.keys is not None
        return e.keys

    def needs_fetch(self, url: str) -> KeysNeeded | None:
        """What prefetch should fetch: the URL when it has no fresh set and a fetch is allowed."""
        e = self._entry(url)
        now = self.clock()
        if now - e.fetched_at > self.ttl_s and now - e.attempted_at >= self.min_refresh_s:
            return KeysNeeded(url, e.generation)
        return None

    async def refresh(self, url: str, generation: int) -> None:
        """Fetch `url` unless an attempt already ended since `generation`; concurrent callers share one
        fetch. Never raises for a failed fetch: it is recorded, and keys() reports it."""
        e = self._entry(url)
        if e.generation != generation:
            return
        loop = asyncio.get_running_loop()
        task = e.inflight
        if task is None or task.done() or task.get_loop() is not loop:
            task = e.inflight = loop.create_task(self._fetch(url, e))
        await asyncio.shield(task)  # a cancelled waiter does not cancel the fetch the others wait on

    async def _fetch(self, url: str, e: _Entry) -> None:
        self.fetches += 1
        try:
            async with asyncio.timeout(self.timeout_s):
                doc = await self._get(url)
            keys = parse_jwks(doc, strict=False)
        except TimeoutError:
            e.error = f"no answer within {self.timeout_s:g} s"
        except _BadResponse as err:
            e.error = str(err)
        except ValueError as err:
            e.error = f"unusable JWKS: {err}"
        except Exception as err:  # any transport failure (httpx.HTTPError, OSError, ...) is an outage
            e.error = f"{type(err).__name__}: {str(err)[:200]}"
        else:
            e.keys, e.kids, e.error = keys, frozenset(k.kid for k in keys if k.kid is not None), None
            e.fetched_at = self.clock()
        finally:
            e.attempted_at = self.clock()
            e.generation += 1
            e.inflight = None

    async def _get(self, url: str) -> Any:
        import httpx

        if self._ssl is None:  # once: building one costs milliseconds of loop time (httpx makes one per client)
            self._ssl = httpx.create_ssl_context()
        # No redirects: the URL the deploy named (and check_jwks_url allowed) is the one fetched.
        async with httpx.AsyncClient(verify=self._ssl, follow_redirects=False, timeout=self.timeout_s) as c:
            async with c.stream("GET", url, headers={"accept": "application/json"}) as r:
                if r.status_code != 200:
                    raise _BadResponse(f"HTTP {r.status_code} from the JWKS URL")
                body = bytearray()
                async for chunk in r.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_JWKS_BYTES:
                        raise _BadResponse(f"the JWKS is larger than {MAX_JWKS_BYTES} bytes")
        try:
            return json.loads(body)
        except (ValueError, RecursionError):
            raise ValueError("not JSON") from None
