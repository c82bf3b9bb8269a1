"""The embedded KV backend: one LMDB environment of its own (kv.lmdb), so a full KV never stops deploys.

Layout (named databases):
  meta     b"format" -> b"1"
  items    ident -> u64be(expires_us, 0 = never) + value, for idents of at most 510 bytes;
           head (511 bytes) -> b"", a marker whose longer keys are in `long` and `heads`
  long     blake2b-256(ident) -> the same record, for idents over 510 bytes
  heads    head -> b"\\x00" + ident[511:] (dupsort, in order)
  expiry   u64be(expires_us) + blake2b-128(ident) -> ident, so purge reads only what has expired
  stores   name -> u64le keys, u64le bytes (len(key) + len(value) of every stored key)

ident = store + b"\\x00" + key. LMDB keys stop at 511 bytes while an ident reaches 576, hence the
split: a direct ident (<= 510) never equals a head (511), and a head sorts exactly where its long
keys do, so one walk over `items` lists keys in lexicographic order.

Every change is one write transaction (LMDB serializes writers across processes), so counters and
byte accounting stay exact under concurrent writers. Writes that add data keep a reserve of free
pages, so a full map refuses them with kv_full while deletes and purges still find pages to
copy-on-write into. Open one LmdbKv per process, after fork; it may be shared by threads.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeGuard

import lmdb

from hive.kv import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_QUOTA_BYTES,
    MAX_KEY_BYTES,
    MAX_VALUE_BYTES,
    KeyPage,
    KvError,
    KvFull,
    KvUnavailable,
    QuotaExceeded,
    StoreUsage,
    add_counter,
    check_cursor,
    check_delta,
    check_key,
    check_limit,
    check_prefix,
    check_store,
    check_ttl,
    check_value,
    parse_counter,
)
from hive.lmdbfiles import check_not_truncated

_FORMAT = b"1"
_HDR = struct.Struct(">Q")  # expires_us; 0 = never
_USAGE = struct.Struct("<QQ")
_DIRECT_MAX = 510
_HEAD = 511
_PURGE_BATCH = 64  # keys per purge transaction: short write locks, few pages to copy on a full map
MIN_MAP_MB = 4


def _ident(store: str, key: bytes) -> bytes:
    return store.encode() + b"\x00" + key


def _long_id(ident: bytes) -> bytes:
    return hashlib.blake2b(ident, digest_size=32).digest()


def _exp_key(exp_us: int, ident: bytes) -> bytes:
    return _HDR.pack(exp_us) + hashlib.blake2b(ident, digest_size=16).digest()


def _now_us(now: float | None) -> int:
    return int((time.time() if now is None else now) * 1_000_000)


def _expiry_us(now_us: int, ttl_s: float | None) -> int:
    return 0 if ttl_s is None else now_us + max(1, round(ttl_s * 1_000_000))


def _expires(rec: bytes | memoryview) -> int:
    return _HDR.unpack_from(rec)[0]


def _live(rec: bytes | memoryview | None, now_us: int) -> TypeGuard[bytes | memoryview]:
    if rec is None:
        return False
    exp = _expires(rec)
    return exp == 0 or exp > now_us


def _pages(stat: lmdb._StatDict) -> int:  # the stubs' name for stat()'s dict (annotations are not evaluated)
    return stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]


class LmdbKv:
    scan_budget = 10_000  # entries one list call reads at most (expired included), so every call is bounded

    def __init__(
        self, path: str | Path, *, map_size_mb: int = 4096, quota_bytes: int = DEFAULT_QUOTA_BYTES, sync: bool = True
    ) -> None:
        """`sync=False` skips fsync on commit (about 20 us per write instead of milliseconds): a process crash or
        restart loses nothing, but a machine crash may lose recent writes, or on file systems that reorder
        writes damage the environment."""
        if map_size_mb < MIN_MAP_MB:
            raise KvError(f"the KV map size must be at least {MIN_MAP_MB} MiB, not {map_size_mb}")
        path = Path(path)
        self.path = path
        self.quota_bytes = quota_bytes
        self._closed = False
        self._pid = os.getpid()
        env = None
        try:
            path.mkdir(parents=True, exist_ok=True)
            self.env = env = lmdb.open(
                str(path),
                map_size=map_size_mb << 20,
                max_dbs=8,
                subdir=True,
                readahead=False,
                max_readers=512,
                sync=sync,
                metasync=sync,
                mode=0o600,
            )
            check_not_truncated(env, path, "the KV store")  # a truncated data.mdb is SIGBUS on the first read
            self._meta = self.env.open_db(b"meta")
            self._items = self.env.open_db(b"items")
            self._long = self.env.open_db(b"long")
            self._heads = self.env.open_db(b"heads", dupsort=True)
            self._expiry = self.env.open_db(b"expiry")
            self._stores = self.env.open_db(b"stores")
            self._dbs = [
                self.env.open_db(None),
                self._meta,
                self._items,
                self._long,
                self._heads,
                self._expiry,
                self._stores,
            ]
            with self.env.begin(write=True, db=self._meta) as txn:
                fmt = txn.get(b"format")
                if fmt is None:
                    txn.put(b"format", _FORMAT)
        except (lmdb.Error, OSError) as e:
            if env is not None:
                env.close()
            raise KvUnavailable(f"cannot open the KV store at {path}: {e}") from e
        if fmt not in (None, _FORMAT):
            self.env.close()
            raise KvUnavailable(f"the KV store at {path} has format {fmt!r}; this version reads {_FORMAT!r}")
        psize = self.env.stat()["psize"]
        self._map_pages = self.env.info()["map_size"] // psize
        # The most pages one set can take: its overflow run plus copied tree paths and free-list records.
        self._write_pages = -(-(MAX_VALUE_BYTES + MAX_KEY_BYTES + 64) // psize) + 64
        # Free pages kept for deletes: the pages the previous write freed are not reusable by the next
        # transaction, the free list itself takes pages, and a delete copies a few tree paths.
        self._reserve_pages = self._write_pages + 64 + self._map_pages // 256

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.env.close()

    def sync(self) -> None:
        """Flush commits to disk (with sync=False they reach the OS at once but the disk later)."""
        self.env.sync(True)

    def __enter__(self) -> LmdbKv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _txn(self, write: bool = False) -> Iterator[lmdb.Transaction]:
        if self._closed:
            raise KvUnavailable("the KV store is closed")
        if os.getpid() != self._pid:
            raise KvUnavailable("this KV handle was opened in another process: open one per process, after fork")
        try:
            with self.env.begin(write=True) if write else self.env.begin(buffers=True) as txn:
                yield txn
        except lmdb.MapFullError as e:
            raise self._full() from e
        except lmdb.ReadersFullError as e:
            raise KvUnavailable("the KV store has no free reader slot; retry") from e
        except lmdb.Error as e:
            raise KvUnavailable(f"the KV store at {self.path} failed: {e}") from e

    def _full(self) -> KvFull:
        mb = self.env.info()["map_size"] >> 20
        return KvFull(
            f"the KV store is full (map size {mb} MiB): delete keys, or raise the KV map size setting", map_size_mb=mb
        )

    # Reads

    def get(self, store: str, key: bytes, *, now: float | None = None) -> bytes | None:
        ident = _ident(check_store(store), check_key(key))
        now_us = _now_us(now)
        with self._txn() as txn:
            rec = self._record(txn, ident)
            return bytes(rec[_HDR.size :]) if _live(rec, now_us) else None

    def list(
        self,
        store: str,
        prefix: bytes = b"",
        cursor: bytes | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
        *,
        now: float | None = None,
    ) -> KeyPage:
        base = check_store(store).encode() + b"\x00"
        fp = base + check_prefix(prefix)
        cursor = check_cursor(cursor)
        limit = check_limit(limit)
        now_us = _now_us(now)
        start, after = fp, None
        if cursor is not None and base + cursor >= fp:
            start = after = base + cursor
        keys: builtins.list[bytes] = []
        scanned = 0
        with self._txn() as txn:
            for ident, rec in self._walk(txn, start):
                if not ident.startswith(fp):
                    break
                if ident == after:
                    continue
                live = _live(rec, now_us)
                if len(keys) == limit:
                    if live:  # one more exists: the page ends here
                        return KeyPage(keys, keys[-1])
                elif live:
                    keys.append(ident[len(base) :])
                scanned += 1
                if scanned >= self.scan_budget:
                    return KeyPage(keys, ident[len(base) :])
        return KeyPage(keys, None)

    def stores(self) -> builtins.list[StoreUsage]:  # `list` is a method here
        with self._txn() as txn:
            return [StoreUsage(bytes(k).decode(), *_USAGE.unpack(v)) for k, v in txn.cursor(db=self._stores)]

    def usage(self, store: str) -> int:
        name = check_store(store).encode()
        with self._txn() as txn:
            raw = txn.get(name, db=self._stores)
            return _USAGE.unpack(raw)[1] if raw is not None else 0

    def _record(self, txn: lmdb.Transaction, ident: bytes) -> bytes | memoryview | None:
        if len(ident) <= _DIRECT_MAX:
            return txn.get(ident, db=self._items)
        return txn.get(_long_id(ident), db=self._long)

    def _walk(self, txn: lmdb.Transaction, start: bytes) -> Iterator[tuple[bytes, bytes | memoryview | None]]:
        """(ident, record) for every ident >= start, in order (None: a long ident without its record)."""
        cur = txn.cursor(db=self._items)
        # A head is the first 511 bytes of its long idents, so a start inside a head's range begins at it.
        if not cur.set_range(start[:_HEAD]):
            return
        for k, v in cur:
            if len(v) == 0:
                yield from self._members(txn, bytes(k), start)
            else:
                ident = bytes(k)
                if ident >= start:
                    yield ident, v

    def _members(
        self, txn: lmdb.Transaction, head: bytes, start: bytes
    ) -> Iterator[tuple[bytes, bytes | memoryview | None]]:
        cur = txn.cursor(db=self._heads)
        if len(start) >= _HEAD and start[:_HEAD] == head:
            found = cur.set_range_dup(head, b"\x00" + start[_HEAD:])
        else:
            found = cur.set_key(head)
        if not found:
            return
        for tail in cur.iternext_dup(keys=False):
            ident = head + bytes(tail)[1:]
            yield ident, txn.get(_long_id(ident), db=self._long)

    # Writes: each is one transaction.

    def set(
        self, store: str, key: bytes, value: bytes, ttl_s: float | None = None, *, now: float | None = None
    ) -> None:
        ident = _ident(check_store(store), check_key(key))
        value = check_value(value)
        ttl = check_ttl(ttl_s)
        now_us = _now_us(now)
        rec = _HDR.pack(_expiry_us(now_us, ttl)) + value
        with self._txn(write=True) as txn:
            self._write(txn, store, ident, rec, now_us)

    def incr(
        self, store: str, key: bytes, delta: int = 1, ttl_s: float | None = None, *, now: float | None = None
    ) -> int:
        key = check_key(key)
        ident = _ident(check_store(store), key)
        delta = check_delta(delta)
        ttl = check_ttl(ttl_s)
        now_us = _now_us(now)
        with self._txn(write=True) as txn:
            old = self._record(txn, ident)
            if _live(old, now_us):
                assert old is not None
                current, exp_us = parse_counter(store, key, bytes(old[_HDR.size :])), _expires(old)
            else:
                current, exp_us = 0, _expiry_us(now_us, ttl)
            new = add_counter(store, key, current, delta)
            self._write(txn, store, ident, _HDR.pack(exp_us) + b"%d" % new, now_us)
            return new

    def delete(self, store: str, key: bytes, *, now: float | None = None) -> bool:
        ident = _ident(check_store(store), check_key(key))
        now_us = _now_us(now)
        with self._txn(write=True) as txn:
            old = self._record(txn, ident)
            if old is None:
                return False
            self._remove(txn, ident, old)
            return _live(old, now_us)

    def purge_expired(self, now: float | None = None, limit: int = 10_000) -> int:
        now_us = _now_us(now)
        done, batch = 0, _PURGE_BATCH
        while done < limit:
            want = min(batch, limit - done)
            try:
                with self._txn(write=True) as txn:
                    n = self._purge(txn, now_us, want)
            except KvFull:
                if batch == 1:
                    raise
                batch //= 2  # a nearly full map: smaller transactions copy fewer pages
                continue
            done += n
            if n < want:
                break
        return done

    def _write(self, txn: lmdb.Transaction, store: str, ident: bytes, rec: bytes, now_us: int) -> None:
        store_b = ident[: ident.index(b"\x00")]
        key_len = len(ident) - len(store_b) - 1
        new_len = len(rec) - _HDR.size
        for attempt in range(2):
            old = self._record(txn, ident)
            grow = new_len - (len(old) - _HDR.size) if old is not None else key_len + new_len
            keys, used = self._usage(txn, store_b)
            if grow <= 0 or used + grow <= self.quota_bytes:
                break
            # Expired keys still count until purged: purge some here before refusing.
            if attempt == 1 or self._purge(txn, now_us, 1000) == 0:
                raise QuotaExceeded(
                    f"store {store!r} would hold {used + grow} bytes, over its quota of {self.quota_bytes}: "
                    "delete keys or set shorter TTLs",
                    store=store,
                    used_bytes=used,
                    quota_bytes=self.quota_bytes,
                )
        if old is not None:
            old_exp = _expires(old)
            if old_exp:
                txn.delete(_exp_key(old_exp, ident), db=self._expiry)
        if len(ident) <= _DIRECT_MAX:
            txn.put(ident, rec, db=self._items)
        else:
            txn.put(_long_id(ident), rec, db=self._long)
            if old is None:
                head = ident[:_HEAD]
                txn.put(head, b"\x00" + ident[_HEAD:], db=self._heads)
                txn.put(head, b"", db=self._items, overwrite=False)
        exp = _expires(rec)
        if exp:
            txn.put(_exp_key(exp, ident), ident, db=self._expiry)
        self._account(txn, store_b, 0 if old is not None else 1, grow)
        self._check_room(txn)

    def _remove(self, txn: lmdb.Transaction, ident: bytes, rec: bytes | memoryview) -> None:
        store_b = ident[: ident.index(b"\x00")]
        exp = _expires(rec)
        size = len(ident) - len(store_b) - 1 + len(rec) - _HDR.size
        if exp:
            txn.delete(_exp_key(exp, ident), db=self._expiry)
        if len(ident) <= _DIRECT_MAX:
            txn.delete(ident, db=self._items)
        else:
            head = ident[:_HEAD]
            txn.delete(_long_id(ident), db=self._long)
            txn.delete(head, b"\x00" + ident[_HEAD:], db=self._heads)
            if txn.get(head, db=self._heads) is None:
                txn.delete(head, db=self._items)
        self._account(txn, store_b, -1, -size)

    def _purge(self, txn: lmdb.Transaction, now_us: int, limit: int) -> int:
        doomed: builtins.list[tuple[bytes, bytes]] = []
        for k, ident in txn.cursor(db=self._expiry):
            if _HDR.unpack_from(k)[0] > now_us or len(doomed) >= limit:
                break
            doomed.append((bytes(k), bytes(ident)))  # bytes already (a write transaction): no copy
        for k, ident in doomed:
            rec = self._record(txn, ident)
            if rec is None or _exp_key(_expires(rec), ident) != k:
                txn.delete(k, db=self._expiry)  # an index entry without its key: never written, but harmless
                continue
            self._remove(txn, ident, rec)
        return len(doomed)

    def _usage(self, txn: lmdb.Transaction, store_b: bytes) -> tuple[int, int]:
        raw = txn.get(store_b, db=self._stores)
        return _USAGE.unpack(raw) if raw is not None else (0, 0)

    def _account(self, txn: lmdb.Transaction, store_b: bytes, keys: int, size: int) -> None:
        n, used = self._usage(txn, store_b)
        n, used = n + keys, used + size
        if n < 0 or used < 0:
            raise KvError(f"KV accounting of store {store_b.decode()!r} went negative; the store is inconsistent")
        if n:
            txn.put(store_b, _USAGE.pack(n, used), db=self._stores)
        else:
            txn.delete(store_b, db=self._stores)

    def _check_room(self, txn: lmdb.Transaction) -> None:
        """Refuse a write that would eat into the pages kept for deletes."""
        if self._map_pages - self.env.info()["last_pgno"] - 1 - self._write_pages >= self._reserve_pages:
            return  # never-used pages alone hold this write and the reserve
        used = 2 + sum(_pages(txn.stat(db)) for db in self._dbs)
        if self._map_pages - used < self._reserve_pages:
            raise self._full()


def check_integrity(kv: LmdbKv) -> list[str]:
    """Problems found walking every record; empty when accounting and indexes agree with the data."""
    problems = []
    entries: list[tuple[bytes, bytes]] = []
    with kv.env.begin() as txn:
        long_found = 0
        for k, v in txn.cursor(db=kv._items):
            if len(v):
                entries.append((k, v))
                continue
            cur = txn.cursor(db=kv._heads)
            tails = list(cur.iternext_dup(keys=False)) if cur.set_key(k) else []
            if not tails:
                problems.append(f"head {k[:40]!r} has no long keys")
            for tail in tails:
                ident = k + tail[1:]
                rec = txn.get(_long_id(ident), db=kv._long)
                if rec is None:
                    problems.append(f"long key {ident[:40]!r} has no record")
                else:
                    entries.append((ident, rec))
                    long_found += 1
        if long_found != txn.stat(kv._long)["entries"]:
            problems.append(f"long holds {txn.stat(kv._long)['entries']} records, the heads list {long_found}")
        for k in txn.cursor(db=kv._heads).iternext_nodup(values=False):
            if txn.get(k, db=kv._items) != b"":
                problems.append(f"heads entry {k[:40]!r} has no head marker")
        usage: dict[bytes, list[int]] = {}
        expiring = set()
        for ident, rec in entries:
            store_b = ident[: ident.index(b"\x00")]
            u = usage.setdefault(store_b, [0, 0])
            u[0] += 1
            u[1] += len(ident) - len(store_b) - 1 + len(rec) - _HDR.size
            exp = _expires(rec)
            if exp:
                ek = _exp_key(exp, ident)
                if txn.get(ek, db=kv._expiry) != ident:
                    problems.append(f"{ident[:40]!r} expires but has no expiry entry")
                expiring.add(ek)
        for k in txn.cursor(db=kv._expiry).iternext(values=False):
            if k not in expiring:
                problems.append(f"expiry entry {k.hex()} belongs to no key")
        stored = {k: list(_USAGE.unpack(v)) for k, v in txn.cursor(db=kv._stores)}
        for name in stored.keys() | usage.keys():
            if stored.get(name) != usage.get(name):
                problems.append(f"store {name.decode()!r}: accounted {stored.get(name)}, found {usage.get(name)}")
    return problems
