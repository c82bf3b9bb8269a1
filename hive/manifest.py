"""Function names and the per-version manifest (limits, permissions, config).

The author's manifest is resolved at deploy into a complete record stored with the version; the
runtime reads only that record.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from hive.errors import HiveError, InvalidManifest, InvalidName

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
RESERVED_NAMES = frozenset({"deploy"})

# WASI capability groups a function can be granted; each maps to the imports it allows.
WASI_GROUPS: dict[str, frozenset[str]] = {
    "clocks": frozenset({"clock_time_get", "clock_res_get"}),
    "random": frozenset({"random_get"}),
    "stdio": frozenset(
        {"fd_write", "fd_read", "fd_close", "fd_seek", "fd_fdstat_get", "fd_prestat_get", "fd_prestat_dir_name"}
    ),
    "env": frozenset({"environ_get", "environ_sizes_get"}),
    # Always granted: they expose nothing (empty args, exit, yield).
    "process": frozenset({"args_get", "args_sizes_get", "proc_exit", "sched_yield"}),
}
# Granted when a manifest names no wasi list, as every peer does: time, randomness, logging and the
# function's own config are no ambient authority. A manifest's explicit list is exact (it may narrow).
# File system and sockets are not in any group: nothing grants them.
DEFAULT_WASI: tuple[str, ...] = ("clocks", "random", "stdio", "env")


def grant_hint(qualified: str) -> tuple[str, str | None]:
    """What to say when `module.name` was refused at deploy: the grant that allows it, or that nothing can."""
    module, _, name = qualified.partition(".")
    if module == "wasi_snapshot_preview1":
        for group, names in WASI_GROUPS.items():
            if name in names:
                return (
                    f'; grant it with "wasi": [..., "{group}"] in the deploy manifest or wasi = [..., '
                    f'"{group}"] in hive.toml [permissions] (a manifest without a wasi list grants '
                    f"{', '.join(DEFAULT_WASI)})",
                    group,
                )
    return (
        "; nothing can grant it: functions have no file system or sockets; use fetch (allowed_hosts) for "
        "the network and KV (kv) for storage (docs/abi.md lists the imports)",
        None,
    )


def validate_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = repr(name)[:80]
        raise InvalidName(
            f"invalid function name {shown}: use 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter"
        )
    if name in RESERVED_NAMES:
        raise InvalidName(f"{name!r} is a reserved name")
    return name


class FetchLimitsSpec(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """limits.fetch: outbound HTTP per invocation (defaults in hive.outbound.FetchLimits)."""

    max_requests: int | None = None
    max_concurrent: int | None = None
    connect_timeout_ms: int | None = None
    timeout_ms: int | None = None
    max_response_bytes: int | None = None
    max_request_bytes: int | None = None


class Limits(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    timeout_ms: int | None = None  # guest execution time per invocation (waiting on I/O does not count)
    memory_mb: int | None = None
    max_request_bytes: int | None = None
    max_response_bytes: int | None = None
    fuel: int | None = None  # instructions-ish budget per invocation; None: no fuel accounting
    wall_timeout_ms: int | None = None  # the whole invocation, waits included
    max_concurrency: int | None = None  # invocations in flight per worker (functions with I/O)
    max_queue: int | None = None  # invocations waiting for one of those slots, then 503 overloaded
    fetch: FetchLimitsSpec | None = None


class RateLimit(msgspec.Struct, forbid_unknown_fields=True):
    rps: float
    burst: int | None = None  # default: one second's worth


class JwtAuth(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    hs256_secret: str | None = None
    rs256_public_key: str | None = None  # PEM
    jwks: dict[str, Any] | None = None  # inline {"keys": [...]}: RS256, ES256, ES384, EdDSA public keys
    jwks_url: str | None = None  # fetched by the server, cached, refreshed on an unknown kid (hive.jwks)
    audience: str | None = None
    issuer: str | None = None
    leeway_s: int = 0


class Auth(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    mode: str = "public"  # public | api_key | jwt
    api_keys: list[str] = msgspec.field(default_factory=list)
    jwt: JwtAuth | None = None


class Cors(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    """Applied by the server to preflights (before auth), the function's responses and its own errors."""

    allow_origins: list[str] = msgspec.field(default_factory=lambda: ["*"])
    allow_methods: list[str] = msgspec.field(
        default_factory=lambda: ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
    )
    allow_headers: list[str] = msgspec.field(
        default_factory=lambda: ["authorization", "x-client-info", "apikey", "content-type"]
    )
    expose_headers: list[str] = msgspec.field(default_factory=list)
    max_age: int = 86400
    allow_credentials: bool = False


class Manifest(msgspec.Struct, forbid_unknown_fields=True):
    """What a deploy may say about a function. None means "the server default"."""

    limits: Limits = msgspec.field(default_factory=Limits)
    wasi: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_WASI))
    config: dict[str, str] = msgspec.field(default_factory=dict)
    rate_limit: RateLimit | None = None
    auth: Auth = msgspec.field(default_factory=Auth)
    allowed_hosts: list[str] = msgspec.field(default_factory=list)  # outbound fetch: default deny
    kv: list[str] = msgspec.field(default_factory=list)  # KV stores granted by name
    isolation: str = "warm"  # warm: instances are reused between requests; request: a fresh one each time
    cors: Cors | None = None
    kind: str = "wasm"  # wasm: a core module; js: JavaScript source for the shared engine (hive/js/server.py)

    def allowed_wasi_imports(self) -> frozenset[str]:
        names = set(WASI_GROUPS["process"])
        for group in self.wasi:
            names |= WASI_GROUPS[group]
        return frozenset(names)

    def public_view(self) -> dict[str, Any]:
        """What list output may show: never config values, keys or secrets."""
        lim = {k: v for k, v in msgspec.structs.asdict(self.limits).items() if v is not None}
        rate = None if self.rate_limit is None else {"rps": self.rate_limit.rps, "burst": burst_of(self.rate_limit)}
        if self.limits.fetch is not None:
            lim["fetch"] = msgspec.structs.asdict(self.limits.fetch)
            lim["fetch"] = {k: v for k, v in lim["fetch"].items() if v is not None}
        return {
            "limits": lim,
            "wasi": self.wasi,
            "config_keys": sorted(self.config),
            "rate_limit": rate,
            "auth": self.auth.mode,
            "allowed_hosts": self.allowed_hosts,
            "kv": self.kv,
            "isolation": self.isolation,
            "cors": None if self.cors is None else msgspec.to_builtins(self.cors),
        }

    @property
    def does_io(self) -> bool:
        """Whether its calls may block on I/O (they then run on guest threads, never on the event loop)."""
        return bool(self.allowed_hosts or self.kv)


def burst_of(rate: RateLimit) -> int:
    return rate.burst if rate.burst is not None else max(1, int(rate.rps))


_LIMIT_RANGES = {
    "timeout_ms": (1, 60_000),
    "memory_mb": (1, 4096),
    "max_request_bytes": (0, 1 << 30),
    "max_response_bytes": (0, 1 << 30),
    "fuel": (1, 1 << 62),
    "wall_timeout_ms": (1, 300_000),
    "max_concurrency": (1, 4096),
    "max_queue": (0, 100_000),
}
_FETCH_RANGES = {
    "max_requests": (0, 10_000),
    "max_concurrent": (1, 256),
    "connect_timeout_ms": (1, 60_000),
    "timeout_ms": (1, 300_000),
    "max_response_bytes": (0, 1 << 30),
    "max_request_bytes": (0, 1 << 30),
}
ISOLATION_MODES = ("warm", "request")
KINDS = ("wasm", "js")
AUTH_MODES = ("public", "api_key", "jwt")


def parse_manifest(raw: bytes | str | None) -> Manifest:
    if not raw:  # None, b"" or ""
        return Manifest()
    try:
        m = msgspec.json.decode(raw, type=Manifest)
    except msgspec.ValidationError as e:
        raise InvalidManifest(f"invalid manifest: {e}") from None
    except msgspec.DecodeError as e:
        raise InvalidManifest(f"manifest is not valid JSON: {e}") from None
    for key, (lo, hi) in _LIMIT_RANGES.items():
        v = getattr(m.limits, key)
        if v is not None and not lo <= v <= hi:
            raise InvalidManifest(f"limits.{key} must be between {lo} and {hi}, got {v}")
    if m.limits.fetch is not None:
        for key, (lo, hi) in _FETCH_RANGES.items():
            v = getattr(m.limits.fetch, key)
            if v is not None and not lo <= v <= hi:
                raise InvalidManifest(f"limits.fetch.{key} must be between {lo} and {hi}, got {v}")
    if m.kind not in KINDS:
        raise InvalidManifest(f"kind must be one of {', '.join(KINDS)}, got {m.kind!r}")
    if m.isolation not in ISOLATION_MODES:
        raise InvalidManifest(f"isolation must be one of {', '.join(ISOLATION_MODES)}, got {m.isolation!r}")
    _check_grants(m)
    if m.cors is not None:
        _check_cors(m.cors)
    unknown = [g for g in m.wasi if g not in WASI_GROUPS]
    if unknown:
        raise InvalidManifest(f"unknown WASI capability {unknown[0]!r}; known: {', '.join(WASI_GROUPS)}")
    for k in m.config:
        if not k or "=" in k or "\x00" in k or "\x00" in m.config[k]:
            raise InvalidManifest(f"invalid config key {k!r}")
    if m.rate_limit is not None:
        if not 0 < m.rate_limit.rps <= 1_000_000 or (m.rate_limit.burst is not None and m.rate_limit.burst < 1):
            raise InvalidManifest("rate_limit needs rps in (0, 1000000] and burst >= 1")
    _check_auth(m.auth)
    return m


_TOKEN_RE = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_ORIGIN_RE = re.compile(r"^https?://[^/?#\s]+$")


def _check_cors(c: Cors) -> None:
    if not c.allow_origins:
        raise InvalidManifest('cors.allow_origins needs at least one origin ("https://app.example.com") or "*"')
    for o in c.allow_origins:
        if o != "*" and not _ORIGIN_RE.match(o.rstrip("/")):
            raise InvalidManifest(f'cors.allow_origins: {o!r} is not an origin like "https://app.example.com" or "*"')
    for field_name in ("allow_methods", "allow_headers", "expose_headers"):
        for v in getattr(c, field_name):
            if v != "*" and not _TOKEN_RE.match(v):
                raise InvalidManifest(f"cors.{field_name}: {v!r} is not an HTTP method or header name")
    if not 0 <= c.max_age <= 86400 * 7:
        raise InvalidManifest("cors.max_age must be between 0 and 604800 seconds")


def _check_grants(m: Manifest) -> None:
    from hive.kv import check_store
    from hive.outbound import parse_allowed_hosts

    parse_allowed_hosts(m.allowed_hosts)  # InvalidManifest naming the entry and the accepted form
    for store in m.kv:
        try:
            check_store(store)
        except HiveError as e:
            raise InvalidManifest(f"kv: {e.message}") from None


def _check_auth(auth: Auth) -> None:
    if auth.mode not in AUTH_MODES:
        raise InvalidManifest(f"auth.mode must be one of {', '.join(AUTH_MODES)}, got {auth.mode!r}")
    if auth.mode == "api_key" and (not auth.api_keys or any(len(k) < 16 for k in auth.api_keys)):
        raise InvalidManifest("auth.mode api_key needs auth.api_keys, each at least 16 characters")
    if auth.mode == "jwt":
        j = auth.jwt
        if j is None or not (j.hs256_secret or j.rs256_public_key or j.jwks is not None or j.jwks_url):
            raise InvalidManifest(
                "auth.mode jwt needs a key: auth.jwt.hs256_secret, rs256_public_key, jwks (inline) or jwks_url"
            )
        # RFC 7518 3.2: an HS256 key must be at least as long as the hash (256 bits).
        if j.hs256_secret is not None and len(j.hs256_secret.encode()) < 32:
            raise InvalidManifest("auth.jwt.hs256_secret must be at least 32 bytes")
        if j.rs256_public_key is not None and not _is_rsa_public_key(j.rs256_public_key):
            raise InvalidManifest("auth.jwt.rs256_public_key must be a PEM RSA public key")
        from hive.jwks import SUPPORTED_ALGS, check_jwks_url, parse_jwks

        try:
            if j.jwks is not None:
                parse_jwks(j.jwks, strict=True)
        except ValueError as e:
            raise InvalidManifest(f"auth.jwt.jwks {e} (supported: {', '.join(SUPPORTED_ALGS)} public keys)") from None
        try:
            if j.jwks_url is not None:
                check_jwks_url(j.jwks_url)
        except ValueError as e:
            raise InvalidManifest(f"auth.jwt.jwks_url {e}") from None
        if not 0 <= j.leeway_s <= 3600:
            raise InvalidManifest("auth.jwt.leeway_s must be between 0 and 3600")


def _is_rsa_public_key(pem: str) -> bool:
    """Whether PyJWT can verify RS256 with this key (a key it can't load would fail every request)."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from jwt.algorithms import RSAAlgorithm
    from jwt.exceptions import PyJWTError

    if "BEGIN PUBLIC KEY" not in pem:
        return False
    try:
        key = RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(pem)
    except (PyJWTError, ValueError, TypeError):
        return False
    return isinstance(key, RSAPublicKey)
