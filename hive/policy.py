"""Who may invoke a function: public, API keys, or JWTs, checked before the guest runs.

JWT keys: an HS256 secret, an RS256 PEM, an inline JWKS and a JWKS URL (ES256, ES384, RS256, EdDSA;
see hive.jwks). Each key verifies only its own algorithm, so no token can choose how a key is used.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Mapping
from typing import Any

import jwt

from hive.errors import (  # noqa: F401 - re-exported: the invoke auth errors
    HiveError,
    InvalidApiKey,
    InvalidToken,
    InvokeUnauthorized,
    MissingCredentials,
    TokenExpired,
    TokenNotYetValid,
)
from hive.jwks import SUPPORTED_ALGS, JwksCache, JwksUnavailable, KeysNeeded, VerifyKey, parse_jwks
from hive.manifest import Auth

__all__ = [
    "CLAIMS_HEADER",
    "MAX_CLAIMS_BYTES",
    "InvokeAuth",
    "InvokeUnauthorized",
    "JwksCache",
    "JwksUnavailable",
    "KeysNeeded",
    "claims_header",
]

# The verified claims, as the guest sees them. The invocation core removes any client-sent copy.
CLAIMS_HEADER = "x-hive-auth-claims"
MAX_CLAIMS_BYTES = 16 * 1024  # the SDKs' (and the host's) largest header value


def claims_header(claims: Mapping[str, Any]) -> bytes:
    """The x-hive-auth-claims value: the claims as compact JSON, ASCII only (non-ASCII as \\u escapes, so
    always a valid header value), at most MAX_CLAIMS_BYTES; InvalidToken (401) otherwise. check()
    already refused tokens whose claims don't fit, so for its result this never raises."""
    try:
        text = json.dumps(claims, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
    except (ValueError, TypeError, RecursionError):  # NaN or Infinity (json.loads accepts them)
        raise InvalidToken("the token's claims are not plain JSON") from None
    if len(text) > MAX_CLAIMS_BYTES:
        raise InvalidToken(f"the token's claims exceed {MAX_CLAIMS_BYTES} bytes")
    return text.encode("ascii")


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _stored_jwks(doc: Any) -> list[VerifyKey]:
    """An inline JWKS as stored (checked strictly at deploy; read leniently here, so that a stricter check
    in a later release never stops an older version from loading: a key it refuses just verifies nothing)."""
    try:
        return parse_jwks(doc, strict=False)
    except ValueError:
        return []


_ASYMMETRIC = frozenset(SUPPORTED_ALGS)  # the algorithms a JWKS URL can supply (HS256 never comes from one)


class InvokeAuth:
    """Built once per loaded version; check() runs per request, on the event loop, without I/O.

    With a JWKS URL the keys come from `jwks` (a JwksCache, best one per worker so every version and
    function naming a URL shares one fetch; by default this instance's own). The contract with the
    invocation core:

        try:
            claims = auth.check(headers)
        except KeysNeeded as need:       # subclass of JwksUnavailable: catch it first
            await auth.refresh(need)     # fetches (coalesced, rate-limited, bounded by a timeout)
            claims = auth.check(headers) # exactly once more; may raise JwksUnavailable (503) or a 401

    After refresh(need) returns, check() does not raise KeysNeeded for the same URL again until the
    cache's min_refresh_s has passed; a second KeysNeeded (a clock that jumped) should be answered as
    the 503 it is, not retried. refresh() never raises for a failed fetch: the following check() raises
    JwksUnavailable (503 jwks_unavailable, retry-after set). `await prefetch()` when a version loads
    fetches what the first request would need, so it rarely waits. A token's own key hints (jku, x5u,
    jwk headers) are never followed.

    The claims check() returns reach the guest as claims_header(claims) in the CLAIMS_HEADER request
    header; the core removes any CLAIMS_HEADER a client sent, whatever the function's auth mode.
    """

    def __init__(self, auth: Auth, jwks: JwksCache | None = None) -> None:
        self.mode = auth.mode
        self.keys = [k.encode() for k in auth.api_keys]
        self.jwt_keys: list[VerifyKey] = []  # static: the secret, the PEM and the inline JWKS
        self.jwks_url: str | None = None
        self.algorithms: frozenset[str] = frozenset()
        self.options: dict[str, Any] = {}
        self.jwks = jwks
        if auth.mode == "jwt" and auth.jwt is not None:
            j = auth.jwt
            if j.hs256_secret:
                self.jwt_keys.append(VerifyKey(None, "HS256", j.hs256_secret))
            if j.rs256_public_key:
                self.jwt_keys.append(VerifyKey(None, "RS256", j.rs256_public_key))
            if j.jwks is not None:
                self.jwt_keys += _stored_jwks(j.jwks)
            self.jwks_url = j.jwks_url
            self.algorithms = frozenset(k.alg for k in self.jwt_keys) | (_ASYMMETRIC if j.jwks_url else frozenset())
            self.options = {"audience": j.audience, "issuer": j.issuer, "leeway": j.leeway_s}
            if j.jwks_url and self.jwks is None:
                self.jwks = JwksCache()

    @property
    def public(self) -> bool:
        return self.mode == "public"

    def check(self, headers: Mapping[str, str]) -> dict[str, Any] | None:
        """The verified JWT claims (None for API keys), or raise: InvokeUnauthorized (401),
        KeysNeeded (await refresh, then check again) or JwksUnavailable (503)."""
        if self.mode == "api_key":
            self._check_key(headers)
            return None
        return self._check_jwt(headers)

    async def refresh(self, need: KeysNeeded) -> None:
        """Fetch what `need` asked for (see the class docstring). Never raises for a failed fetch."""
        if self.jwks is not None:
            await self.jwks.refresh(need.url, need.generation)

    async def prefetch(self) -> None:
        """Fetch the JWKS URL's keys if they are missing or expired (and a fetch is allowed); never raises."""
        if self.jwks is not None and self.jwks_url is not None:
            need = self.jwks.needs_fetch(self.jwks_url)
            if need is not None:
                await self.refresh(need)

    def _check_key(self, headers: Mapping[str, str]) -> None:
        given = headers.get("apikey") or headers.get("x-api-key") or _bearer(headers)
        if not given:
            raise MissingCredentials("this function needs an API key: 'apikey: <key>' or 'Authorization: Bearer <key>'")
        candidate = given.encode()
        ok = False
        for key in self.keys:  # no early exit: the time taken does not say which key nearly matched
            ok |= hmac.compare_digest(candidate, key)
        if not ok:
            raise InvalidApiKey("the API key is not valid for this function")

    def _check_jwt(self, headers: Mapping[str, str]) -> dict[str, Any]:
        token = _bearer(headers)
        if token is None:
            raise MissingCredentials("this function needs 'Authorization: Bearer <JWT>'")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError:
            raise InvalidToken("the token is not a well-formed JWT") from None
        alg, kid = header.get("alg"), header.get("kid")
        if not isinstance(alg, str) or alg not in self.algorithms:
            raise InvalidToken(f"tokens signed with {str(alg)[:20]!r} are not accepted by this function")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken("the token's kid is not a string")
        candidates = self._candidates(alg, kid)
        if not candidates:
            raise InvalidToken("no key of this function matches the token's kid")
        claims = self._verify(token, candidates)
        claims_header(claims)  # refuse now (401) what could not reach the guest
        return claims

    def _candidates(self, alg: str, kid: str | None) -> list[VerifyKey]:
        """The keys to try, fewest first: the static key with this kid; else the URL's keys for it
        (which may need a fetch); then the static keys that name no kid (or all, for a kid-less token)."""
        own = [k for k in self.jwt_keys if k.alg == alg]
        if kid is not None:
            exact = [k for k in own if k.kid == kid]
            if exact:
                return exact
        found: list[VerifyKey] = []
        if self.jwks_url is not None and self.jwks is not None and alg in _ASYMMETRIC:
            found = [
                k
                for k in self.jwks.keys(self.jwks_url, kid)
                if k.alg == alg and (kid is None or k.kid is None or k.kid == kid)
            ]
        return found + [k for k in own if kid is None or k.kid is None]

    def _verify(self, token: str, candidates: list[VerifyKey]) -> dict[str, Any]:
        o = self.options
        for i, k in enumerate(candidates):
            try:
                return jwt.decode(
                    token,
                    k.key,
                    algorithms=[k.alg],
                    audience=o["audience"],
                    issuer=o["issuer"],
                    leeway=o["leeway"],
                    options={"require": ["exp"], "verify_aud": o["audience"] is not None},
                )
            except jwt.InvalidSignatureError:
                if i + 1 < len(candidates):
                    continue  # another key may have signed it; claims are only checked after a signature holds
                raise InvalidToken("the token is not valid: Signature verification failed") from None
            except jwt.ExpiredSignatureError:
                raise TokenExpired("the token has expired") from None
            except jwt.ImmatureSignatureError:
                raise TokenNotYetValid("the token is not valid yet (nbf)") from None
            except jwt.InvalidTokenError as e:
                raise InvalidToken(f"the token is not valid: {e}") from None
            except jwt.PyJWTError:  # e.g. a stored key PyJWT can't use: still a 401, never a 500
                raise InvalidToken("the token cannot be verified") from None
        raise InvalidToken("the token cannot be verified")
