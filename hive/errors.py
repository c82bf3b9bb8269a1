"""One error base; each subclass has a stable snake_case code and an HTTP status. Every HiveError of
the server lives here (the modules that raise them re-export their own).

The rendering to HTTP responses lives in hive.render; the mapping to exit codes in hive.cli.
"""

from __future__ import annotations

from typing import Any


class HiveError(Exception):
    code = "internal_error"
    status = 500

    def __init__(self, message: str, *, headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        self.extra = extra
        self.headers = headers or {}

    def to_dict(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


class BadRequest(HiveError):
    code, status = "bad_request", 400


class ClientGone(HiveError):
    code, status = "client_disconnected", 400


class InvalidName(HiveError):
    code, status = "invalid_name", 400


class Unauthorized(HiveError):
    code, status = "unauthorized", 401


class NotFound(HiveError):
    code, status = "not_found", 404


class FunctionNotFound(HiveError):
    code, status = "function_not_found", 404


class NoPreviousVersion(HiveError):
    code, status = "no_previous_version", 409


class RateLimited(HiveError):
    code, status = "rate_limited", 429


class MethodNotAllowed(HiveError):
    code, status = "method_not_allowed", 405


class PayloadTooLarge(HiveError):
    code, status = "payload_too_large", 413


class UriTooLong(HiveError):
    code, status = "uri_too_long", 414


class HeadersTooLarge(HiveError):
    code, status = "headers_too_large", 431


class UnsupportedMediaType(HiveError):
    code, status = "unsupported_media_type", 415


class InvalidModule(HiveError):
    """Not WebAssembly, fails validation, or lacks the ABI exports."""

    code, status = "invalid_module", 422


class ModuleTooComplex(InvalidModule):
    """More functions or code than the settings allow, or a compile past its memory or time limit."""

    code, status = "module_too_complex", 422


class CompileFailed(HiveError):
    """The compiler process failed for a reason no limit explains."""

    code, status = "compile_failed", 500


class ForbiddenImport(HiveError):
    code, status = "forbidden_import", 422


class InvalidManifest(HiveError):
    code, status = "invalid_manifest", 422


class GuestError(HiveError):
    """The guest failed while serving a request."""

    code, status = "guest_error", 502


class GuestTrap(GuestError):
    code, status = "trap", 502


class AbiViolation(GuestError):
    code, status = "abi_violation", 502


class ResponseTooLarge(AbiViolation):
    code, status = "response_too_large", 502


class GuestExit(GuestError):
    code, status = "guest_exit", 502


class Timeout(GuestError):
    code, status = "timeout", 504


class WallTimeout(GuestError):
    """The whole invocation, waits included, ran past limits.wall_timeout_ms."""

    code, status = "wall_timeout", 504


class Overloaded(HiveError):
    """More invocations of a function than its max_concurrency and queue allow."""

    code, status = "overloaded", 503


class FuelExhausted(GuestError):
    code, status = "fuel_exhausted", 504


class NotReady(HiveError):
    code, status = "not_ready", 503


class RegistryError(HiveError):
    code, status = "registry_error", 500


class RegistryFull(RegistryError):
    """The LMDB map (registry_map_size_mb) is used up."""

    code, status = "registry_full", 507


class RegistryUnavailable(RegistryError):
    """Cluster mode: the registry's PostgreSQL cannot be reached, so changes wait; serving goes on."""

    code, status = "registry_unavailable", 503


class NodeFenced(HiveError):
    """Cluster mode: this node lost the cluster registry while other nodes still reach it (its lease ran
    out), so it may lack changes made since; it refuses invocations until it has caught up."""

    code, status = "node_fenced", 503

    def __init__(
        self,
        message: str = "this node lost its connection to the cluster registry (PostgreSQL) and may lack recent "
        "changes: retry on another node (this one serves again once it has reconnected and caught up)",
    ) -> None:
        super().__init__(message)


class RegistryDamaged(RegistryError):
    """The registry's files are not what LMDB wrote (e.g. data.mdb was truncated)."""

    code, status = "registry_damaged", 500


class InsufficientStorage(HiveError):
    """The disk under the data dir is full."""

    code, status = "insufficient_storage", 507


class BuildError(HiveError):
    code, status = "build_failed", 500


class InvokeUnauthorized(Unauthorized):
    """A caller refused by a function's auth (the admin routes' refusal is Unauthorized itself)."""


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


# --- invoke auth (hive.policy, hive.jwks) ---


class JwksUnavailable(HiveError):
    """The function's signing keys can't be fetched: no token is accepted until they can."""

    code, status = "jwks_unavailable", 503
    detail = ""  # for the server's log (the URL and what failed); never sent to the client


class KeysNeeded(JwksUnavailable):
    """Raised by a synchronous check that needs `url` fetched first: await refresh, then check again.

    A 503 jwks_unavailable if it ever escapes (a caller that never fetches fails closed)."""

    def __init__(self, url: str, generation: int) -> None:
        super().__init__("this function's signing keys are being fetched; try again", headers={"retry-after": "1"})
        self.url = url
        self.generation = generation


# --- KV stores (hive.kv): a guest sees these as error values ---


class KvError(HiveError):
    code, status = "kv_error", 500


class InvalidStore(KvError):
    code, status = "invalid_store", 400


class InvalidKey(KvError):
    code, status = "invalid_key", 400


class InvalidArgument(KvError):
    """A TTL, delta, limit, prefix, cursor or value of the wrong type or range."""

    code, status = "invalid_argument", 400


class KeyNotFound(KvError):
    """For callers that turn an absent key into an error (the admin API); get itself returns None."""

    code, status = "key_not_found", 404


class NotANumber(KvError):
    code, status = "not_a_number", 409


class NumberOverflow(KvError):
    code, status = "number_overflow", 409


class KeyTooLarge(KvError):
    code, status = "key_too_large", 413


class ValueTooLarge(KvError):
    code, status = "value_too_large", 413


class QuotaExceeded(KvError):
    code, status = "quota_exceeded", 507


class KvFull(KvError):
    """The backend as a whole has no room (the LMDB map is full); reads and deletes still work."""

    code, status = "kv_full", 507


class KvUnavailable(KvError):
    """The backend cannot be used right now: closed, not openable, out of reader slots, or a handle used after fork."""

    code, status = "kv_unavailable", 503


# --- outbound fetch (hive.outbound) ---


class OutboundSetupError(HiveError):
    """The worker's outbound client could not be set up (e.g. an unreadable outbound_ca_file)."""

    code, status = "outbound_setup_failed", 500


# --- the CLI's client (hive.client) ---


class ClientError(HiveError):
    code = "client_error"
