"""Who may invoke a function: public, API keys, or JWTs (HS256 or RS256), checked before the guest runs."""

from __future__ import annotations

import hmac
from typing import Any

import jwt

from hive.errors import HiveError
from hive.manifest import Auth


class InvokeUnauthorized(HiveError):
    code, status = "unauthorized", 401


class MissingCredentials(InvokeUnauthorized):
    code = "missing_credentials"


class InvalidApiKey(InvokeUnauthorized):
    code = "invalid_api_key"


class InvalidToken(InvokeUnauthorized):
    code = "invalid_token"


class TokenExpired(InvokeUnauthorized):
    code = "token_expired"


class TokenNotYetValid(InvokeUnauthorized):
    code = "token_not_yet_valid"


def _bearer(headers: dict[str, str]) -> str | None:
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


class InvokeAuth:
    """Built once per loaded version; check() runs per request."""

    def __init__(self, auth: Auth) -> None:
        self.mode = auth.mode
        self.keys = [k.encode() for k in auth.api_keys]
        self.jwt_keys: list[tuple[str, Any]] = []
        self.options: dict[str, Any] = {}
        if auth.mode == "jwt" and auth.jwt is not None:
            j = auth.jwt
            if j.hs256_secret:
                self.jwt_keys.append(("HS256", j.hs256_secret))
            if j.rs256_public_key:
                self.jwt_keys.append(("RS256", j.rs256_public_key))
            self.options = {"audience": j.audience, "issuer": j.issuer, "leeway": j.leeway_s}

    @property
    def public(self) -> bool:
        return self.mode == "public"

    def check(self, headers: dict[str, str]) -> dict[str, Any] | None:
        """Raise InvokeUnauthorized, or return the verified JWT claims (None for API keys)."""
        if self.mode == "api_key":
            return self._check_key(headers)
        return self._check_jwt(headers)

    def _check_key(self, headers: dict[str, str]) -> None:
        given = headers.get("apikey") or headers.get("x-api-key") or _bearer(headers)
        if not given:
            raise MissingCredentials("this function needs an API key: 'apikey: <key>' or 'Authorization: Bearer <key>'")
        candidate = given.encode()
        ok = False
        for key in self.keys:  # no early exit: the time taken does not say which key nearly matched
            ok |= hmac.compare_digest(candidate, key)
        if not ok:
            raise InvalidApiKey("the API key is not valid for this function")

    def _check_jwt(self, headers: dict[str, str]) -> dict[str, Any]:
        token = _bearer(headers)
        if token is None:
            raise MissingCredentials("this function needs 'Authorization: Bearer <JWT>'")
        try:
            alg = jwt.get_unverified_header(token).get("alg")
        except jwt.InvalidTokenError:
            raise InvalidToken("the token is not a well-formed JWT") from None
        key = next((k for a, k in self.jwt_keys if a == alg), None)
        if key is None:
            raise InvalidToken(f"tokens signed with {alg!r} are not accepted by this function")
        try:
            return jwt.decode(token, key, algorithms=[alg], audience=self.options["audience"],
                              issuer=self.options["issuer"], leeway=self.options["leeway"],
                              options={"require": ["exp"], "verify_aud": self.options["audience"] is not None})
        except jwt.ExpiredSignatureError:
            raise TokenExpired("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise TokenNotYetValid("the token is not valid yet (nbf)") from None
        except jwt.InvalidTokenError as e:
            raise InvalidToken(f"the token is not valid: {e}") from None
        except jwt.PyJWTError:  # e.g. a stored key PyJWT can't use: still a 401, never a 500
            raise InvalidToken("the token cannot be verified") from None
