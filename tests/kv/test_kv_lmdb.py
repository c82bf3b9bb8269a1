"""The embedded LMDB backend: durability, a full map, its own environment, long keys, integrity."""

from __future__ import annotations

import os
from pathlib import Path

import lmdb
import pytest

from hive.kv import MAX_KEY_BYTES, KvError, KvFull, KvUnavailable, StoreUsage
from hive.kv.lmdb import LmdbKv, check_integrity
from hive.manifest import Manifest
from hive.registry import Registry

T0 = 1_000_000.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "kv.lmdb"


def fill(kv: LmdbKv, store: str, value_size: int, max_keys: int) -> int:
    """Set keys until the map is full; how many went in."""
    for i in range(max_keys):
        try:
            kv.set(store, b"k%07d" % i, b"%07d" % i * (value_size // 7 + 1))
        except KvFull as e:
            assert (e.code, e.status) == ("kv_full", 507)
            assert e.extra == {"map_size_mb": 4}
            return i
    raise AssertionError(f"{max_keys} keys of {value_size} bytes did not fill the map")


def test_reopen_after_close_keeps_everything(path: Path) -> None:
    kv = LmdbKv(path)  # sync=True, the default
    kv.set("default", b"plain", b"v")
    kv.set("default", b"ttl", b"v", ttl_s=10, now=T0)
    kv.set("long-" + "x" * 58, b"L" * MAX_KEY_BYTES, b"long key")
    assert kv.incr("counters", b"n", 5) == 5
    kv.close()
    kv = LmdbKv(path)
    try:
        assert kv.get("default", b"plain") == b"v"
        assert kv.get("default", b"ttl", now=T0 + 9) == b"v"
        assert kv.get("default", b"ttl", now=T0 + 10) is None
        assert kv.get("long-" + "x" * 58, b"L" * MAX_KEY_BYTES) == b"long key"
        assert kv.incr("counters", b"n") == 6
        assert kv.stores() == [
            StoreUsage("counters", 1, 2),
            StoreUsage("default", 2, 10),
            StoreUsage("long-" + "x" * 58, 1, MAX_KEY_BYTES + 8),
        ]
        assert kv.purge_expired(now=T0 + 10) == 1
        assert check_integrity(kv) == []
    finally:
        kv.close()


def test_closed_handle_is_unavailable(path: Path) -> None:
    kv = LmdbKv(path)
    kv.close()
    kv.close()  # twice is fine
    for op in (
        lambda: kv.get("default", b"k"),
        lambda: kv.set("default", b"k", b"v"),
        kv.stores,
        lambda: kv.purge_expired(),
    ):
        with pytest.raises(KvUnavailable) as e:
            op()
        assert e.value.status == 503


def test_handle_used_after_fork_is_refused(path: Path) -> None:
    with LmdbKv(path) as kv:
        kv.set("default", b"k", b"v")
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: must not touch the parent's environment
            code = b"no error"
            try:
                kv.get("default", b"k")
            except KvUnavailable as e:
                code = e.code.encode()
            except BaseException:
                code = b"other error"
            os.write(write, code)
            os._exit(0)
        os.close(write)
        answer = os.read(read, 100)
        os.close(read)
        os.waitpid(pid, 0)
        assert answer == b"kv_unavailable"
        assert kv.get("default", b"k") == b"v"


def test_open_failures(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_bytes(b"not a directory")
    with pytest.raises(KvUnavailable, match="cannot open"):
        LmdbKv(tmp_path / "a-file")
    with pytest.raises(KvError, match="at least 4 MiB"):
        LmdbKv(tmp_path / "kv.lmdb", map_size_mb=1)


def test_unknown_format_is_refused(path: Path) -> None:
    LmdbKv(path).close()
    env = lmdb.open(str(path), max_dbs=8)
    with env.begin(write=True, db=env.open_db(b"meta")) as txn:
        txn.put(b"format", b"99")
    env.close()
    with pytest.raises(KvUnavailable, match="format"):
        LmdbKv(path)


def test_own_environment_apart_from_the_registry(tmp_path: Path) -> None:
    """A full KV map never stops a deploy: the registry is another environment."""
    registry = Registry(tmp_path / "registry.lmdb", map_size_mb=64)
    kv = LmdbKv(tmp_path / "kv.lmdb", map_size_mb=4, sync=False)
    try:
        fill(kv, "default", 20_000, 1000)
        rec = registry.deploy("hello", b"\0asm\1\0\0\0", Manifest())
        assert registry.current("hello") == rec
        assert sorted(p.name for p in tmp_path.iterdir()) == ["kv.lmdb", "registry.lmdb"]
    finally:
        kv.close()
        registry.close()


@pytest.mark.parametrize("value_size", [40, 3000, 100_000])
def test_full_map_refuses_writes_and_keeps_reads_and_deletes(path: Path, value_size: int) -> None:
    kv = LmdbKv(path, map_size_mb=4, sync=False)
    try:
        n = fill(kv, "default", value_size, 200_000)
        assert n > 5
        with pytest.raises(KvFull):  # the refused write stays refused, and left nothing behind
            kv.set("default", b"k%07d" % n, b"%07d" % n * (value_size // 7 + 1))
        assert kv.get("default", b"k%07d" % n) is None
        assert kv.stores()[0].keys == n
        for i in range(0, n, 97):
            assert kv.get("default", b"k%07d" % i) == b"%07d" % i * (value_size // 7 + 1)
        assert len(kv.list("default", limit=1000).keys) == min(n, 1000)
        # Every key can be deleted, one transaction each, on the full map.
        for i in range(n):
            assert kv.delete("default", b"k%07d" % i)
        assert kv.stores() == []
        # And the room is usable again.
        assert fill(kv, "default", value_size, 200_000) > n // 2
        assert check_integrity(kv) == []
    finally:
        kv.close()


def test_purge_on_a_full_map(path: Path) -> None:
    kv = LmdbKv(path, map_size_mb=4, sync=False)
    try:
        n = 0
        for i in range(200_000):
            try:
                kv.set("default", b"t%07d" % i, b"x" * 40, ttl_s=1, now=T0)
            except KvFull:
                break
            n += 1
        assert kv.purge_expired(now=T0 + 2, limit=1_000_000) == n
        assert kv.stores() == []
        assert check_integrity(kv) == []
    finally:
        kv.close()


def test_list_work_per_call_is_bounded(path: Path) -> None:
    with LmdbKv(path, sync=False) as kv:
        kv.scan_budget = 5
        for i in range(12):
            kv.set("default", b"e%02d" % i, b"v", ttl_s=1, now=T0)
        kv.set("default", b"live", b"v")
        first = kv.list("default", now=T0 + 2)
        assert first == ([], b"e04")  # only expired keys in reach: no keys, but a cursor to go on
        keys, cursor, calls = list(first.keys), first.next_cursor, 1
        while cursor is not None and calls < 10:
            page = kv.list("default", cursor=cursor, now=T0 + 2)
            keys += page.keys
            cursor = page.next_cursor
            calls += 1
        assert (keys, calls) == ([b"live"], 3)


def test_long_keys_share_heads_in_order(path: Path) -> None:
    store = "s" * 63  # the ident is store + 1 + key: keys above 446 bytes go through the long path
    head = b"h" * 447
    keys = [head + t for t in (b"", b"\x00", b"\x00\x00", b"a", b"ab", b"b", b"\xff" * 65)]
    keys += [head[:-1], head[:-1] + b"i", b"h" * 446 + b"\x00" * 66]
    keys = [k[:MAX_KEY_BYTES] for k in keys]
    with LmdbKv(path, sync=False) as kv:
        for k in keys:
            kv.set(store, k, k[-3:])
        assert kv.list(store, limit=1000).keys == sorted(keys)
        for limit in (1, 2, 3):
            cursor, seen = None, []
            for _ in range(20):
                page = kv.list(store, cursor=cursor, limit=limit)
                seen += page.keys
                cursor = page.next_cursor
                if cursor is None:
                    break
            assert seen == sorted(keys)
        assert kv.list(store, head + b"a", limit=1000).keys == [head + b"a", head + b"ab"]
        for k in keys:
            assert kv.get(store, k) == k[-3:]
        assert check_integrity(kv) == []
        for k in keys:
            assert kv.delete(store, k)
        assert check_integrity(kv) == []
        assert kv.stores() == [] and kv.env.stat()["entries"] == 6  # only the named databases are left
        with kv.env.begin() as txn:
            for db in kv._dbs[1:]:
                assert txn.stat(db)["entries"] == (1 if db is kv._meta else 0)


def test_check_integrity_finds_problems(path: Path) -> None:
    with LmdbKv(path, sync=False) as kv:
        kv.set("default", b"a", b"v", ttl_s=10, now=T0)
        kv.set("default", b"b", b"v")
        assert check_integrity(kv) == []
        with kv.env.begin(write=True) as txn:
            txn.put(b"default", b"\0" * 16, db=kv._stores)
            txn.delete(b"default\x00b", db=kv._items)
            txn.put(b"\0" * 24, b"default\x00zz", db=kv._expiry)
        problems = check_integrity(kv)
        assert any("accounted" in p for p in problems)
        assert any("belongs to no key" in p for p in problems)
        with kv.env.begin(write=True) as txn:
            for k in list(txn.cursor(db=kv._expiry).iternext(values=False)):
                txn.delete(k, db=kv._expiry)
        problems = check_integrity(kv)
        assert any("no expiry entry" in p for p in problems)
        assert not any("belongs to no key" in p for p in problems)
