"""One error base; each subclass has a stable snake_case code and an HTTP status.

The mapping to HTTP responses lives in hive.app; the mapping to exit codes in hive.cli.
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


class RegistryDamaged(RegistryError):
    """The registry's files are not what LMDB wrote (e.g. data.mdb was truncated)."""

    code, status = "registry_damaged", 500


class InsufficientStorage(HiveError):
    """The disk under the data dir is full."""

    code, status = "insufficient_storage", 507


class BuildError(HiveError):
    code, status = "build_failed", 500
