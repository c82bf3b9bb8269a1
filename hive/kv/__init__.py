"""Key-value stores for functions: the interface every backend follows, its limits and its errors.

A store is a named, flat key space (bytes -> bytes) shared by every function granted it. The embedded
backend is hive.kv.lmdb (its own LMDB environment); a PostgreSQL backend follows the same contract in
cluster mode. Backends validate arguments with the check_* functions below, so both refuse the same
inputs with the same error codes.

Semantics every backend keeps:
- Expired keys are absent to every read (get, list, incr, delete's answer) before purge_expired
  removes them; byte accounting and quotas count them until then.
- `now` (wall-clock seconds, time.time()) is the clock for expiry; None means the current time.
- incr: the stored value is a decimal int64 (ASCII: an optional "-" and 1-19 digits); an absent key
  counts as 0. ttl_s applies only when incr creates the key; an existing counter keeps its expiry
  (as Redis INCR does). A quota refusal may first purge expired keys to make room.
- list: keys in bytewise lexicographic order. next_cursor is the position to continue after (a key);
  a page may hold fewer than `limit` keys while next_cursor is not None (a backend bounds the work per
  call); None means the range is done.
- Usage counts len(key) + len(value) of every stored key; the quota applies to it per store.
"""

from __future__ import annotations

import builtins
import math
import re
from typing import Any, NamedTuple, Protocol, runtime_checkable

from hive.errors import (  # noqa: F401 - re-exported: the KV errors
    HiveError,
    InvalidArgument,
    InvalidKey,
    InvalidStore,
    KeyNotFound,
    KeyTooLarge,
    KvError,
    KvFull,
    KvUnavailable,
    NotANumber,
    NumberOverflow,
    QuotaExceeded,
    ValueTooLarge,
)

MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 1 << 20
DEFAULT_QUOTA_BYTES = 100 << 20
DEFAULT_LIST_LIMIT = 100
MAX_LIST_LIMIT = 1000
MAX_TTL_S = 100 * 365 * 86400.0
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
STORE_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


# The errors live in hive.errors with every other HiveError.


class StoreUsage(NamedTuple):
    name: str
    keys: int
    bytes: int


class KeyPage(NamedTuple):
    keys: list[bytes]
    next_cursor: bytes | None


@runtime_checkable
class KvBackend(Protocol):
    def get(self, store: str, key: bytes, *, now: float | None = None) -> bytes | None: ...

    def set(
        self, store: str, key: bytes, value: bytes, ttl_s: float | None = None, *, now: float | None = None
    ) -> None: ...

    def delete(self, store: str, key: bytes, *, now: float | None = None) -> bool:
        """True when a live key was removed (an expired one is removed too, but answers False)."""
        ...

    def list(
        self,
        store: str,
        prefix: bytes = b"",
        cursor: bytes | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
        *,
        now: float | None = None,
    ) -> KeyPage: ...

    def incr(
        self, store: str, key: bytes, delta: int = 1, ttl_s: float | None = None, *, now: float | None = None
    ) -> int: ...

    def stores(self) -> builtins.list[StoreUsage]:  # `list` is a method here
        """Every store that holds at least one key, by name."""
        ...

    def usage(self, store: str) -> int: ...

    def purge_expired(self, now: float | None = None, limit: int = 10_000) -> int:
        """Remove up to `limit` expired keys, oldest expiry first; the number removed."""
        ...

    def sync(self) -> None:
        """Make every commit so far durable (a no-op where each commit already is)."""
        ...

    def close(self) -> None: ...


# Validation shared by backends: each returns the normalized argument or raises.

_BytesLike = (bytes, bytearray, memoryview)


def check_store(store: Any) -> str:
    if not isinstance(store, str) or not STORE_RE.fullmatch(store):
        raise InvalidStore(
            f"invalid store name {repr(store)[:80]}: use 1-63 characters of a-z, 0-9, '_' or '-', "
            "starting with a letter"
        )
    return store


def check_key(key: Any) -> bytes:
    if not isinstance(key, _BytesLike):
        raise InvalidKey(f"a key must be bytes, not {type(key).__name__}")
    key = bytes(key)
    if not key:
        raise InvalidKey("a key must not be empty")
    if len(key) > MAX_KEY_BYTES:
        raise KeyTooLarge(
            f"key is {len(key)} bytes; keys are at most {MAX_KEY_BYTES} bytes", size=len(key), max_bytes=MAX_KEY_BYTES
        )
    return key


def check_value(value: Any) -> bytes:
    if not isinstance(value, _BytesLike):
        raise InvalidArgument(f"a value must be bytes, not {type(value).__name__}")
    value = bytes(value)
    if len(value) > MAX_VALUE_BYTES:
        raise ValueTooLarge(
            f"value is {len(value)} bytes; values are at most {MAX_VALUE_BYTES} bytes (1 MiB)",
            size=len(value),
            max_bytes=MAX_VALUE_BYTES,
        )
    return value


def check_ttl(ttl_s: Any) -> float | None:
    if ttl_s is None:
        return None
    if (
        isinstance(ttl_s, bool)
        or not isinstance(ttl_s, int | float)
        or not math.isfinite(ttl_s)
        or not 0 < ttl_s <= MAX_TTL_S
    ):
        raise InvalidArgument(
            f"ttl_s must be a number of seconds above 0 and at most {MAX_TTL_S:.0f}, not {repr(ttl_s)[:40]}"
        )
    return float(ttl_s)


def check_delta(delta: Any) -> int:
    if isinstance(delta, bool) or not isinstance(delta, int) or not INT64_MIN <= delta <= INT64_MAX:
        raise InvalidArgument(f"delta must be an int64, not {repr(delta)[:40]}")
    return delta


def check_limit(limit: Any) -> int:
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidArgument(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, not {repr(limit)[:40]}")
    return limit


def check_prefix(prefix: Any) -> bytes:
    if not isinstance(prefix, _BytesLike) or len(prefix) > MAX_KEY_BYTES:
        raise InvalidArgument(f"prefix must be bytes of at most {MAX_KEY_BYTES} bytes")
    return bytes(prefix)


def check_cursor(cursor: Any) -> bytes | None:
    if cursor is None:
        return None
    if not isinstance(cursor, _BytesLike) or len(cursor) > MAX_KEY_BYTES:
        raise InvalidArgument("cursor must be the next_cursor of an earlier list call, or None")
    return bytes(cursor)


_INT_RE = re.compile(rb"-?[0-9]{1,19}")


def parse_counter(store: str, key: bytes, raw: bytes) -> int:
    """The int64 a counter holds, or NotANumber."""
    n = int(raw) if _INT_RE.fullmatch(raw) else None
    if n is None or not INT64_MIN <= n <= INT64_MAX:
        raise NotANumber(
            f"key {key[:64]!r} in store {store!r} holds a value that is not a decimal int64; "
            "set it to a number or delete it before incr"
        )
    return n


def add_counter(store: str, key: bytes, current: int, delta: int) -> int:
    new = current + delta
    if not INT64_MIN <= new <= INT64_MAX:
        raise NumberOverflow(
            f"incr of key {key[:64]!r} in store {store!r} by {delta} would leave the int64 range; "
            "reset the counter with set or delete"
        )
    return new
