"""The KV contract every backend keeps (hive.kv), run against each backend in tests/kv/conftest.py."""

from __future__ import annotations

import math
import random
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive.errors import HiveError
from hive.kv import (
    INT64_MAX,
    INT64_MIN,
    MAX_KEY_BYTES,
    MAX_LIST_LIMIT,
    MAX_VALUE_BYTES,
    InvalidArgument,
    InvalidKey,
    InvalidStore,
    KeyNotFound,
    KeyTooLarge,
    KvBackend,
    KvError,
    KvFull,
    KvUnavailable,
    NotANumber,
    NumberOverflow,
    QuotaExceeded,
    StoreUsage,
    ValueTooLarge,
)
from tests.kv.conftest import OpenKv
from tests.support import poll

T0 = 1_000_000.0  # an explicit clock for expiry tests


def all_keys(kv: KvBackend, store: str, prefix: bytes = b"", limit: int = 100, now: float | None = None) -> list[bytes]:
    out: list[bytes] = []
    cursor = None
    for _ in range(10_000):
        page = kv.list(store, prefix, cursor, limit, now=now)
        assert len(page.keys) <= limit
        out += page.keys
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor
    raise AssertionError("list never finished")


# --- get / set / delete ---


def test_is_a_kv_backend(kv: KvBackend) -> None:
    assert isinstance(kv, KvBackend)


def test_set_get_overwrite(kv: KvBackend) -> None:
    assert kv.get("default", b"k") is None
    assert kv.set("default", b"k", b"v1") is None
    assert kv.get("default", b"k") == b"v1"
    kv.set("default", b"k", b"second value")
    assert kv.get("default", b"k") == b"second value"


def test_binary_keys_and_values_and_empty_value(kv: KvBackend) -> None:
    key, value = b"\x00\xff\x00key\n", bytes(range(256))
    kv.set("default", key, value)
    kv.set("default", b"empty", b"")
    assert kv.get("default", key) == value
    assert kv.get("default", b"empty") == b""
    assert kv.get("default", b"\x00\xff\x00key") is None


def test_bytes_like_arguments(kv: KvBackend) -> None:
    kv.set("default", bytearray(b"k"), memoryview(b"value"))
    assert kv.get("default", memoryview(b"k")) == b"value"
    assert isinstance(kv.get("default", b"k"), bytes)


def test_delete(kv: KvBackend) -> None:
    assert kv.delete("default", b"k") is False
    kv.set("default", b"k", b"v")
    assert kv.delete("default", b"k") is True
    assert kv.get("default", b"k") is None
    assert kv.delete("default", b"k") is False
    assert kv.stores() == []


def test_stores_are_separate(kv: KvBackend) -> None:
    kv.set("a", b"k", b"in a")
    kv.set("a-b", b"k", b"in a-b")
    kv.set("ab", b"k2", b"in ab")
    assert kv.get("a", b"k") == b"in a"
    assert kv.get("a-b", b"k") == b"in a-b"
    assert kv.get("ab", b"k") is None
    assert all_keys(kv, "a") == [b"k"]
    assert all_keys(kv, "ab") == [b"k2"]
    kv.delete("a", b"k")
    assert kv.get("a-b", b"k") == b"in a-b"


# --- limits and argument checks ---


def test_key_limits(kv: KvBackend) -> None:
    kv.set("default", b"k" * MAX_KEY_BYTES, b"v")
    assert kv.get("default", b"k" * MAX_KEY_BYTES) == b"v"
    for op in (
        lambda k: kv.set("default", k, b"v"),
        lambda k: kv.get("default", k),
        lambda k: kv.delete("default", k),
        lambda k: kv.incr("default", k),
    ):
        with pytest.raises(KeyTooLarge) as e:
            op(b"k" * (MAX_KEY_BYTES + 1))
        assert e.value.extra == {"size": 513, "max_bytes": 512}
        with pytest.raises(InvalidKey):
            op(b"")
        with pytest.raises(InvalidKey):
            op("a str")
    assert all_keys(kv, "default") == [b"k" * MAX_KEY_BYTES]


def test_value_limits(kv: KvBackend) -> None:
    kv.set("default", b"big", b"v" * MAX_VALUE_BYTES)
    assert kv.get("default", b"big") == b"v" * MAX_VALUE_BYTES
    with pytest.raises(ValueTooLarge):
        kv.set("default", b"big", b"v" * (MAX_VALUE_BYTES + 1))
    with pytest.raises(InvalidArgument):
        kv.set("default", b"k", "a str")  # type: ignore[arg-type]
    assert kv.get("default", b"big") == b"v" * MAX_VALUE_BYTES
    assert kv.get("default", b"k") is None


@pytest.mark.parametrize("store", ["", "A", "1abc", "a" * 64, "a.b", "a/b", "ä", " a", "a\x00", None, b"abc"])
def test_invalid_store_names(kv: KvBackend, store: Any) -> None:
    for op in (
        lambda: kv.set(store, b"k", b"v"),
        lambda: kv.get(store, b"k"),
        lambda: kv.delete(store, b"k"),
        lambda: kv.list(store),
        lambda: kv.incr(store, b"k"),
        lambda: kv.usage(store),
    ):
        with pytest.raises(InvalidStore):
            op()
    assert kv.stores() == []


def test_valid_store_names(kv: KvBackend) -> None:
    for store in ("a", "a" * 63, "z0_-9"):
        kv.set(store, b"k", b"v")
        assert kv.get(store, b"k") == b"v"
    assert [s.name for s in kv.stores()] == sorted(["a", "a" * 63, "z0_-9"])


@pytest.mark.parametrize("ttl", [0, -1, math.nan, math.inf, True, "5", 1e12])
def test_invalid_ttl(kv: KvBackend, ttl: Any) -> None:
    with pytest.raises(InvalidArgument):
        kv.set("default", b"k", b"v", ttl)
    with pytest.raises(InvalidArgument):
        kv.incr("default", b"k", 1, ttl)
    assert kv.get("default", b"k") is None


@pytest.mark.parametrize("limit", [0, -1, MAX_LIST_LIMIT + 1, 1.5, True, None])
def test_invalid_list_limit(kv: KvBackend, limit: Any) -> None:
    with pytest.raises(InvalidArgument):
        kv.list("default", limit=limit)


def test_invalid_prefix_and_cursor(kv: KvBackend) -> None:
    with pytest.raises(InvalidArgument):
        kv.list("default", prefix="a")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument):
        kv.list("default", prefix=b"p" * (MAX_KEY_BYTES + 1))
    with pytest.raises(InvalidArgument):
        kv.list("default", cursor="a")  # type: ignore[arg-type]


# --- TTL and purge ---


def test_ttl_expiry_with_an_explicit_clock(kv: KvBackend) -> None:
    kv.set("default", b"k", b"v", ttl_s=10, now=T0)
    assert kv.get("default", b"k", now=T0 + 9.999) == b"v"
    assert all_keys(kv, "default", now=T0 + 9.999) == [b"k"]
    assert kv.get("default", b"k", now=T0 + 10) is None  # expires at exactly now + ttl
    assert all_keys(kv, "default", now=T0 + 10) == []
    # Still stored (and counted) until purged.
    assert kv.stores() == [StoreUsage("default", 1, 2)]


def test_short_real_ttl_expires(kv: KvBackend) -> None:
    kv.set("default", b"k", b"v", ttl_s=0.05)
    kv.set("default", b"stays", b"v")
    poll("the key to expire", lambda: kv.get("default", b"k") is None, timeout=30)
    assert kv.get("default", b"stays") == b"v"
    assert kv.purge_expired() == 1
    assert kv.stores() == [StoreUsage("default", 1, 6)]


def test_overwrite_replaces_or_clears_expiry(kv: KvBackend) -> None:
    kv.set("default", b"k", b"v", ttl_s=10, now=T0)
    kv.set("default", b"k", b"v2", now=T0 + 1)  # no ttl: never expires
    assert kv.get("default", b"k", now=T0 + 1e6) == b"v2"
    assert kv.purge_expired(now=T0 + 1e6) == 0
    kv.set("default", b"k", b"v3", ttl_s=100, now=T0 + 2)
    assert kv.purge_expired(now=T0 + 50) == 0
    assert kv.get("default", b"k", now=T0 + 101.9) == b"v3"
    assert kv.get("default", b"k", now=T0 + 102) is None


def test_delete_of_an_expired_key_removes_it_and_answers_false(kv: KvBackend) -> None:
    kv.set("default", b"k", b"v", ttl_s=1, now=T0)
    assert kv.delete("default", b"k", now=T0 + 5) is False
    assert kv.stores() == []
    assert kv.purge_expired(now=T0 + 5) == 0


def test_set_over_an_expired_key(kv: KvBackend) -> None:
    kv.set("default", b"k", b"old", ttl_s=1, now=T0)
    kv.set("default", b"k", b"new", now=T0 + 5)
    assert kv.get("default", b"k", now=T0 + 5) == b"new"
    assert kv.purge_expired(now=T0 + 1e6) == 0
    assert kv.stores() == [StoreUsage("default", 1, 4)]


def test_purge_removes_only_expired_keys_oldest_first(kv: KvBackend) -> None:
    for i in range(10):
        kv.set("default", b"t%d" % i, b"v", ttl_s=i + 1, now=T0)
        kv.set("other", b"t%d" % i, b"v", ttl_s=100 + i, now=T0)
    kv.set("default", b"forever", b"v", now=T0)
    assert kv.purge_expired(now=T0) == 0
    assert kv.purge_expired(now=T0 + 3.5, limit=2) == 2  # t0 and t1
    assert kv.get("default", b"t2", now=T0) == b"v"
    assert kv.purge_expired(now=T0 + 3.5) == 1  # t2
    assert kv.purge_expired(now=T0 + 3.5) == 0
    assert all_keys(kv, "default", now=T0) == [b"forever"] + [b"t%d" % i for i in range(3, 10)]
    assert kv.purge_expired(now=T0 + 1000) == 17
    assert kv.stores() == [StoreUsage("default", 1, len(b"forever") + 1)]
    assert all_keys(kv, "other", now=T0) == []


def test_purge_in_many_batches(kv: KvBackend) -> None:
    for i in range(300):
        kv.set("default", b"k%03d" % i, b"v", ttl_s=1, now=T0)
    assert kv.purge_expired(now=T0 + 2, limit=250) == 250
    assert kv.purge_expired(now=T0 + 2) == 50
    assert kv.stores() == []


# --- list ---


def test_list_is_lexicographic_and_paged(kv: KvBackend) -> None:
    rng = random.Random(7)
    keys = {bytes(rng.randrange(256) for _ in range(rng.randrange(1, 12))) for _ in range(250)}
    for k in keys:
        kv.set("default", k, b"v")
    for limit in (1, 7, 100, MAX_LIST_LIMIT):
        assert all_keys(kv, "default", limit=limit) == sorted(keys)
    first = kv.list("default", limit=10)
    assert first.keys == sorted(keys)[:10] and first.next_cursor == sorted(keys)[9]
    assert kv.list("default").keys == sorted(keys)[:100]  # the default limit
    assert kv.list("default", limit=MAX_LIST_LIMIT).next_cursor is None


def test_list_by_prefix(kv: KvBackend) -> None:
    for k in (b"user:1", b"user:2", b"user:10", b"user", b"users", b"usex", b"a", b"user:\xff"):
        kv.set("default", k, b"v")
    assert all_keys(kv, "default", b"user:", limit=2) == [b"user:1", b"user:10", b"user:2", b"user:\xff"]
    assert all_keys(kv, "default", b"user") == [b"user", b"user:1", b"user:10", b"user:2", b"user:\xff", b"users"]
    assert all_keys(kv, "default", b"nothing") == []
    assert all_keys(kv, "default", b"\xff") == []


def test_list_cursor_outside_the_prefix(kv: KvBackend) -> None:
    for k in (b"a", b"b1", b"b2", b"c"):
        kv.set("default", k, b"v")
    assert kv.list("default", b"b", cursor=b"a").keys == [b"b1", b"b2"]  # before the range: from its start
    assert kv.list("default", b"b", cursor=b"b1").keys == [b"b2"]
    assert kv.list("default", b"b", cursor=b"zz") == ([], None)  # after it: nothing
    assert kv.list("default", cursor=b"b15").keys == [b"b2", b"c"]  # a cursor need not be a stored key


def test_list_pages_stay_correct_while_keys_change(kv: KvBackend) -> None:
    for i in range(10):
        kv.set("default", b"k%d" % i, b"v")
    page = kv.list("default", limit=5)
    kv.delete("default", b"k5")
    kv.set("default", b"k0a", b"v")  # before the cursor: not seen
    kv.set("default", b"k9a", b"v")  # after it: seen
    rest = kv.list("default", cursor=page.next_cursor, limit=100)
    assert rest == ([b"k6", b"k7", b"k8", b"k9", b"k9a"], None)


def test_list_skips_expired_keys(kv: KvBackend) -> None:
    for i in range(6):
        kv.set("default", b"k%d" % i, b"v", ttl_s=10 if i % 2 else None, now=T0)
    assert all_keys(kv, "default", limit=2, now=T0 + 20) == [b"k0", b"k2", b"k4"]
    # The page is full and only expired keys follow: no further page is promised.
    assert kv.list("default", limit=3, now=T0 + 20) == ([b"k0", b"k2", b"k4"], None)
    assert kv.list("default", limit=3, now=T0) == ([b"k0", b"k1", b"k2"], b"k2")


def test_list_returns_copies(kv: KvBackend) -> None:
    kv.set("default", b"k", b"v")
    keys = kv.list("default").keys
    assert keys == [b"k"] and all(type(k) is bytes for k in keys)


# --- incr ---


def test_incr_counts(kv: KvBackend) -> None:
    assert kv.incr("default", b"n") == 1
    assert kv.incr("default", b"n") == 2
    assert kv.incr("default", b"n", 40) == 42
    assert kv.incr("default", b"n", -50) == -8
    assert kv.get("default", b"n") == b"-8"
    assert kv.incr("default", b"zero", 0) == 0
    assert kv.get("default", b"zero") == b"0"


def test_incr_reads_a_decimal_set_by_set(kv: KvBackend) -> None:
    kv.set("default", b"n", b"41")
    assert kv.incr("default", b"n") == 42
    kv.set("default", b"n", b"-0007")
    assert kv.incr("default", b"n") == -6


@pytest.mark.parametrize(
    "raw",
    [
        b"abc",
        b"1.5",
        b" 1",
        b"1 ",
        b"+1",
        b"",
        b"1\n",
        b"--1",
        b"0x10",
        b"1_000",
        b"\xd9\xa1",
        b"9223372036854775808",
        b"-9223372036854775809",
        b"00000000000000000001",
    ],
)
def test_incr_of_a_non_number(kv: KvBackend, raw: bytes) -> None:
    kv.set("default", b"n", raw)
    with pytest.raises(NotANumber) as e:
        kv.incr("default", b"n")
    assert e.value.code == "not_a_number"
    assert kv.get("default", b"n") == raw


def test_incr_int64_bounds_and_overflow(kv: KvBackend) -> None:
    kv.set("default", b"n", b"%d" % (INT64_MAX - 1))
    assert kv.incr("default", b"n") == INT64_MAX
    with pytest.raises(NumberOverflow):
        kv.incr("default", b"n")
    assert kv.get("default", b"n") == b"%d" % INT64_MAX
    assert kv.incr("default", b"m", INT64_MIN) == INT64_MIN
    with pytest.raises(NumberOverflow):
        kv.incr("default", b"m", -1)
    assert kv.incr("default", b"m", INT64_MAX) == -1


@pytest.mark.parametrize("delta", [1.0, True, "1", INT64_MAX + 1, INT64_MIN - 1, None])
def test_incr_invalid_delta(kv: KvBackend, delta: Any) -> None:
    with pytest.raises(InvalidArgument):
        kv.incr("default", b"n", delta)
    assert kv.get("default", b"n") is None


def test_incr_ttl_applies_when_it_creates_the_key(kv: KvBackend) -> None:
    assert kv.incr("default", b"n", ttl_s=10, now=T0) == 1
    assert kv.incr("default", b"n", ttl_s=1000, now=T0 + 5) == 2  # keeps its expiry
    assert kv.get("default", b"n", now=T0 + 9.9) == b"2"
    assert kv.get("default", b"n", now=T0 + 10) is None
    assert kv.incr("default", b"n", ttl_s=10, now=T0 + 10) == 1  # expired: a new counter
    assert kv.get("default", b"n", now=T0 + 19.9) == b"1"
    kv.set("default", b"p", b"5")
    assert kv.incr("default", b"p", ttl_s=1, now=T0) == 6  # an existing key without expiry keeps none
    assert kv.get("default", b"p", now=T0 + 1e6) == b"6"
    assert kv.purge_expired(now=T0 + 20) == 1
    assert kv.get("default", b"n", now=T0) is None


# --- accounting and quota ---


def test_usage_counts_key_and_value_bytes(kv: KvBackend) -> None:
    assert kv.usage("default") == 0
    kv.set("default", b"abc", b"12345")
    assert kv.usage("default") == 8
    kv.set("default", b"abc", b"1")
    assert kv.usage("default") == 4
    kv.set("default", b"d", b"")
    kv.incr("default", b"n", 9)
    assert kv.usage("default") == 4 + 1 + 2
    kv.incr("default", b"n")  # "9" -> "10"
    assert kv.usage("default") == 8
    kv.set("other", b"x", b"yy")
    assert kv.stores() == [StoreUsage("default", 3, 8), StoreUsage("other", 1, 3)]
    kv.delete("default", b"abc")
    assert kv.stores() == [StoreUsage("default", 2, 4), StoreUsage("other", 1, 3)]
    assert kv.usage("other") == 3 and kv.usage("nothing") == 0


def test_quota_exact_boundary(open_kv: OpenKv) -> None:
    kv = open_kv(quota_bytes=1000)
    kv.set("default", b"a", b"x" * 499)
    kv.set("default", b"b", b"x" * 499)  # exactly 1000
    assert kv.usage("default") == 1000
    with pytest.raises(QuotaExceeded) as e:
        kv.set("default", b"c", b"")
    assert (e.value.code, e.value.status) == ("quota_exceeded", 507)
    assert e.value.extra == {"store": "default", "used_bytes": 1000, "quota_bytes": 1000}
    with pytest.raises(QuotaExceeded):
        kv.set("default", b"a", b"x" * 500)  # growing an existing key
    with pytest.raises(QuotaExceeded):
        kv.incr("default", b"n")
    assert kv.get("default", b"a") == b"x" * 499 and kv.get("default", b"c") is None
    kv.set("default", b"a", b"x" * 499)  # same size: allowed at the quota
    kv.set("default", b"a", b"x" * 489)
    kv.set("default", b"c", b"x" * 9)  # back to exactly 1000
    assert kv.usage("default") == 1000
    kv.set("other", b"a", b"x" * 999)  # each store has its own quota
    assert kv.stores() == [StoreUsage("default", 3, 1000), StoreUsage("other", 1, 1000)]


def test_quota_makes_room_from_expired_keys(open_kv: OpenKv) -> None:
    kv = open_kv(quota_bytes=1000)
    kv.set("default", b"a", b"x" * 899, ttl_s=1, now=T0)
    with pytest.raises(QuotaExceeded):
        kv.set("default", b"b", b"x" * 199, now=T0)
    kv.set("default", b"b", b"x" * 199, now=T0 + 2)  # a has expired: purged to make room
    assert kv.stores() == [StoreUsage("default", 1, 200)]


# --- errors ---


def test_error_codes_and_statuses() -> None:
    table = {
        KvError: ("kv_error", 500),
        InvalidStore: ("invalid_store", 400),
        InvalidKey: ("invalid_key", 400),
        InvalidArgument: ("invalid_argument", 400),
        KeyNotFound: ("key_not_found", 404),
        NotANumber: ("not_a_number", 409),
        NumberOverflow: ("number_overflow", 409),
        KeyTooLarge: ("key_too_large", 413),
        ValueTooLarge: ("value_too_large", 413),
        QuotaExceeded: ("quota_exceeded", 507),
        KvFull: ("kv_full", 507),
        KvUnavailable: ("kv_unavailable", 503),
    }
    for cls, (code, status) in table.items():
        assert issubclass(cls, KvError) and issubclass(cls, HiveError)
        assert (cls.code, cls.status) == (code, status)
        assert cls("m").to_dict() == {"error": code, "message": "m"}


# --- a model: random operations against a dict, around the long-key boundary ---

# Store names of 1 and 63 characters; keys up to 512 bytes sharing long prefixes, so idents cross
# every length an LMDB key can and cannot hold.
_STORES = st.sampled_from(["s", "s" * 63])
_KEYS = st.builds(
    lambda n, tail: (b"p" * n + tail)[:MAX_KEY_BYTES] or b"p",
    st.sampled_from([0, 1, 440, 446, 447, 448, 449, 450, 500, 506, 507, 508, 509, 510, 511]),
    st.binary(min_size=0, max_size=4),
)
_OPS = st.lists(
    st.tuples(st.sampled_from(["set", "delete", "incr", "get"]), _STORES, _KEYS, st.binary(max_size=3)),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ops=_OPS, prefix_len=st.sampled_from([0, 1, 447, 449, 508, 512]), limit=st.sampled_from([1, 3, 1000]))
def test_model(open_kv: OpenKv, ops: list[tuple[str, str, bytes, bytes]], prefix_len: int, limit: int) -> None:
    kv = open_kv()
    try:
        for store in ("s", "s" * 63):  # what an earlier example left behind
            for k in all_keys(kv, store):
                kv.delete(store, k)
        model: dict[tuple[str, bytes], bytes] = {}
        for op, store, key, value in ops:
            if op == "set":
                kv.set(store, key, value)
                model[store, key] = value
            elif op == "delete":
                assert kv.delete(store, key) == ((store, key) in model)
                model.pop((store, key), None)
            elif op == "incr":
                current = model.get((store, key), b"0")
                if re.fullmatch(rb"-?[0-9]{1,19}", current):
                    n = kv.incr(store, key, 3)
                    assert n == int(current) + 3
                    model[store, key] = b"%d" % n
                else:
                    with pytest.raises(NotANumber):
                        kv.incr(store, key, 3)
            assert kv.get(store, key) == model.get((store, key))
        for store in ("s", "s" * 63):
            mine = sorted(k for s, k in model if s == store)
            assert all_keys(kv, store, limit=limit) == mine
            prefix = b"p" * prefix_len
            assert all_keys(kv, store, prefix, limit=limit) == [k for k in mine if k.startswith(prefix)]
            assert kv.usage(store) == sum(len(k) + len(v) for (s, k), v in model.items() if s == store)
    finally:
        kv.close()


def test_a_set_is_visible_to_the_next_get(kv: KvBackend) -> None:
    for i in range(50):
        kv.set("default", b"k", b"%d" % i)
        assert kv.get("default", b"k") == b"%d" % i
        assert kv.incr("default", b"n") == i + 1


def test_threads_share_one_handle(kv: KvBackend) -> None:
    """A worker's guest threads share its backend handle: counters stay exact."""
    import threading

    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(300):
                kv.incr("default", b"n")
                assert kv.get("default", b"n") is not None
        except BaseException as e:  # reported below: a thread's exception would otherwise vanish
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    assert kv.get("default", b"n") == b"1800"
