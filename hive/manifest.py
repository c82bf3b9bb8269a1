"""Function names and the per-version manifest (limits, permissions, config).

The author's manifest is resolved at deploy into a complete record stored with the version; the
runtime reads only that record.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from hive.errors import InvalidManifest, InvalidName

NAME_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
RESERVED_NAMES = frozenset({"deploy"})

# WASI capability groups a function can be granted; each maps to the imports it allows.
WASI_GROUPS: dict[str, frozenset[str]] = {
    "clocks": frozenset({"clock_time_get", "clock_res_get"}),
    "random": frozenset({"random_get"}),
    "stdio": frozenset({"fd_write", "fd_read", "fd_close", "fd_seek", "fd_fdstat_get",
                        "fd_prestat_get", "fd_prestat_dir_name"}),
    "env": frozenset({"environ_get", "environ_sizes_get"}),
    # Always granted: they expose nothing (empty args, exit, yield).
    "process": frozenset({"args_get", "args_sizes_get", "proc_exit", "sched_yield"}),
}
DEFAULT_WASI = ("clocks", "random", "stdio", "env")


def validate_name(name: Any) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        shown = repr(name)[:80]
        raise InvalidName(
            f"invalid function name {shown}: use 1-63 characters of a-z, 0-9, '_' or '-', starting with a letter"
        )
    if name in RESERVED_NAMES:
        raise InvalidName(f"{name!r} is a reserved name")
    return name


class Limits(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    timeout_ms: int | None = None
    memory_mb: int | None = None
    max_request_bytes: int | None = None
    max_response_bytes: int | None = None


class Manifest(msgspec.Struct, forbid_unknown_fields=True):
    """What a deploy may say about a function. None means "the server default"."""

    limits: Limits = msgspec.field(default_factory=Limits)
    wasi: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_WASI))
    config: dict[str, str] = msgspec.field(default_factory=dict)

    def allowed_wasi_imports(self) -> frozenset[str]:
        names = set(WASI_GROUPS["process"])
        for group in self.wasi:
            names |= WASI_GROUPS[group]
        return frozenset(names)


_LIMIT_RANGES = {
    "timeout_ms": (1, 60_000),
    "memory_mb": (1, 4096),
    "max_request_bytes": (0, 1 << 30),
    "max_response_bytes": (0, 1 << 30),
}


def parse_manifest(raw: bytes | str | None) -> Manifest:
    if raw in (None, b"", ""):
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
    unknown = [g for g in m.wasi if g not in WASI_GROUPS]
    if unknown:
        raise InvalidManifest(f"unknown WASI capability {unknown[0]!r}; known: {', '.join(WASI_GROUPS)}")
    for k in m.config:
        if not k or "=" in k or "\x00" in k or "\x00" in m.config[k]:
            raise InvalidManifest(f"invalid config key {k!r}")
    return m
