"""The KV backend of cluster mode: PostgreSQL tables shared by every node, same contract as hive.kv.lmdb.

Tables (created on first use):
  hive_kv_items   (store, key) -> value, expires_us (0 = never); bytea keys sort bytewise, as in LMDB
  hive_kv_stores  store -> keys, bytes (len(key) + len(value) of every stored key)

Every change is one transaction that first locks its store's row in hive_kv_stores, so writers of one
store are serialized on every node and counters, byte accounting and quotas stay exact; writers of
different stores do not wait for each other. A transaction locks at most one store row, except
purge_expired, which locks several in name order: no lock cycle, so no deadlock. The clock for expiry
is the caller's (`now`), as in LMDB, so nodes agree as far as their clocks do.
Open one PgKv per process, after fork; threads share it (a small connection pool).
"""

from __future__ import annotations

import builtins
import contextlib
import os
import threading
import time
from collections.abc import Iterator

import psycopg

from hive.cluster.pg import Pool, is_connection_error
from hive.kv import (
    DEFAULT_LIST_LIMIT,
    DEFAULT_QUOTA_BYTES,
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS hive_kv_stores (
    store text COLLATE "C" PRIMARY KEY,
    keys bigint NOT NULL DEFAULT 0,
    bytes bigint NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS hive_kv_items (
    store text COLLATE "C" NOT NULL,
    key bytea NOT NULL,
    value bytea NOT NULL,
    expires_us bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (store, key));
CREATE INDEX IF NOT EXISTS hive_kv_items_expiry ON hive_kv_items (expires_us) WHERE expires_us <> 0;
"""
_SCHEMA_LOCK = 0x68697665_6B76  # pg_advisory_xact_lock key: nodes creating the tables at once take turns
_PURGE_BATCH = 500
_QUOTA_PURGE = 1000  # expired keys of the store a quota refusal first purges
OP_TIMEOUT_S = 10.0  # one operation's PostgreSQL calls at most (a stalled server: kv_unavailable)


def _now_us(now: float | None) -> int:
    return int((time.time() if now is None else now) * 1_000_000)


def _expiry_us(now_us: int, ttl_s: float | None) -> int:
    return 0 if ttl_s is None else now_us + max(1, round(ttl_s * 1_000_000))


def _live(exp_us: int, now_us: int) -> bool:
    return exp_us == 0 or exp_us > now_us


def _upper(prefix: bytes) -> bytes | None:
    """The smallest key above every key that starts with `prefix` (None: no such key)."""
    p = prefix.rstrip(b"\xff")
    return p[:-1] + bytes([p[-1] + 1]) if p else None


class PgKv:
    scan_budget = 10_000  # rows one list call reads at most (expired included), so every call is bounded

    def __init__(
        self,
        dsn: str,
        *,
        quota_bytes: int = DEFAULT_QUOTA_BYTES,
        pool_size: int = 8,
        application_name: str = "edge-hive-kv",
    ) -> None:
        self.quota_bytes = quota_bytes
        self._pool = Pool(dsn, size=pool_size, application_name=application_name)
        self._pid = os.getpid()
        self._closed = False
        self._ready = False
        self._ready_lock = threading.Lock()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._pool.close()

    def sync(self) -> None:
        """Each commit is already as durable as the server makes it."""

    def __enter__(self) -> PgKv:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextlib.contextmanager
    def _conn(self, write: bool = False) -> Iterator[psycopg.Connection]:
        if self._closed:
            raise KvUnavailable("the KV store is closed")
        if os.getpid() != self._pid:
            raise KvUnavailable("this KV handle was opened in another process: open one per process, after fork")
        try:
            with self._pool.connection(timeout_s=OP_TIMEOUT_S) as conn:
                if not self._ready:
                    self._create(conn)
                if write:
                    with conn.transaction():
                        yield conn
                else:
                    yield conn
        except psycopg.errors.DiskFull as e:
            raise KvFull(
                "the KV store's PostgreSQL server has no disk space left: delete keys, or free space "
                "on the database server"
            ) from e
        except psycopg.Error as e:
            if is_connection_error(e):
                raise KvUnavailable(f"the KV store (PostgreSQL) is unavailable: {str(e).strip()[:200]}; retry") from e
            raise KvError(f"the KV store (PostgreSQL) failed: {str(e).strip()[:200]}") from e

    def _create(self, conn: psycopg.Connection) -> None:
        with self._ready_lock:
            if self._ready:
                return
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                conn.execute(SCHEMA)
            self._ready = True

    # Reads

    def get(self, store: str, key: bytes, *, now: float | None = None) -> bytes | None:
        store, key = check_store(store), check_key(key)
        now_us = _now_us(now)
        with self._conn() as conn:
            row = conn.execute(
                "SELECT value, expires_us FROM hive_kv_items WHERE store = %s AND key = %s", (store, key), binary=True
            ).fetchone()
        return bytes(row[0]) if row is not None and _live(row[1], now_us) else None

    def list(
        self,
        store: str,
        prefix: bytes = b"",
        cursor: bytes | None = None,
        limit: int = DEFAULT_LIST_LIMIT,
        *,
        now: float | None = None,
    ) -> KeyPage:
        store = check_store(store)
        prefix = check_prefix(prefix)
        cursor = check_cursor(cursor)
        limit = check_limit(limit)
        now_us = _now_us(now)
        if cursor is not None and cursor >= prefix:
            where, args = "key > %s", [cursor]
        else:
            where, args = "key >= %s", [prefix]
        upper = _upper(prefix)
        if upper is not None:
            where += " AND key < %s"
            args.append(upper)
        budget = self.scan_budget
        # The inner scan reads at most `budget` rows in key order; out of it come the live keys (one more
        # than a page, to know whether another follows) and the last row read, where a next call resumes.
        sql = (
            f"SELECT key, live, n FROM (SELECT key, (expires_us = 0 OR expires_us > %s) AS live, "
            f"row_number() OVER (ORDER BY key) AS n FROM (SELECT key, expires_us FROM hive_kv_items "
            f"WHERE store = %s AND {where} ORDER BY key LIMIT %s) s) r WHERE live OR n = %s ORDER BY key LIMIT %s"
        )
        with self._conn() as conn:
            rows = conn.execute(sql, (now_us, store, *args, budget, budget, limit + 1), binary=True).fetchall()
        keys: builtins.list[bytes] = []
        for key, live, n in rows:
            if live:
                if len(keys) == limit:
                    return KeyPage(keys, keys[-1])
                keys.append(bytes(key))
            if n >= budget:
                return KeyPage(keys, bytes(key))
        return KeyPage(keys, None)

    def stores(self) -> builtins.list[StoreUsage]:  # `list` is a method here
        with self._conn() as conn:
            rows = conn.execute(
                "SELECT store, keys, bytes FROM hive_kv_stores WHERE keys > 0 ORDER BY store"
            ).fetchall()
        return [StoreUsage(*row) for row in rows]

    def usage(self, store: str) -> int:
        store = check_store(store)
        with self._conn() as conn:
            row = conn.execute("SELECT bytes FROM hive_kv_stores WHERE store = %s", (store,)).fetchone()
        return row[0] if row is not None else 0

    # Writes: each is one transaction, holding its store's row lock.

    def set(
        self, store: str, key: bytes, value: bytes, ttl_s: float | None = None, *, now: float | None = None
    ) -> None:
        store, key = check_store(store), check_key(key)
        value = check_value(value)
        ttl = check_ttl(ttl_s)
        now_us = _now_us(now)
        with self._conn(write=True) as conn:
            self._write(conn, store, key, value, _expiry_us(now_us, ttl), now_us)

    def incr(
        self, store: str, key: bytes, delta: int = 1, ttl_s: float | None = None, *, now: float | None = None
    ) -> int:
        store, key = check_store(store), check_key(key)
        delta = check_delta(delta)
        ttl = check_ttl(ttl_s)
        now_us = _now_us(now)
        with self._conn(write=True) as conn:
            self._lock_store(conn, store)
            row = conn.execute(
                "SELECT value, expires_us FROM hive_kv_items WHERE store = %s AND key = %s", (store, key), binary=True
            ).fetchone()
            if row is not None and _live(row[1], now_us):
                current, exp_us = parse_counter(store, key, bytes(row[0])), row[1]
            else:
                current, exp_us = 0, _expiry_us(now_us, ttl)
            new = add_counter(store, key, current, delta)
            self._write(conn, store, key, b"%d" % new, exp_us, now_us, locked=True)
            return new

    def delete(self, store: str, key: bytes, *, now: float | None = None) -> bool:
        store, key = check_store(store), check_key(key)
        now_us = _now_us(now)
        with self._conn(write=True) as conn:
            # No store row: the store never held a key (rows are never removed), so nothing to delete.
            if conn.execute("SELECT 1 FROM hive_kv_stores WHERE store = %s FOR UPDATE", (store,)).fetchone() is None:
                return False
            row = conn.execute(
                "DELETE FROM hive_kv_items WHERE store = %s AND key = %s RETURNING length(value), expires_us",
                (store, key),
            ).fetchone()
            if row is None:
                return False
            self._account(conn, store, -1, -(len(key) + row[0]))
            return _live(row[1], now_us)

    def purge_expired(self, now: float | None = None, limit: int = 10_000) -> int:
        now_us = _now_us(now)
        done = 0
        while done < limit:
            want = min(_PURGE_BATCH, limit - done)
            with self._conn(write=True) as conn:
                n = self._purge(conn, now_us, want)
            done += n
            if n < want:
                break
        return done

    def _lock_store(self, conn: psycopg.Connection, store: str) -> tuple[int, int]:
        """Lock the store's accounting row (creating it), serializing this store's writers; (keys, bytes)."""
        sql = "SELECT keys, bytes FROM hive_kv_stores WHERE store = %s FOR UPDATE"
        row = conn.execute(sql, (store,)).fetchone()
        if row is None:
            conn.execute("INSERT INTO hive_kv_stores (store) VALUES (%s) ON CONFLICT DO NOTHING", (store,))
            row = conn.execute(sql, (store,)).fetchone()
            assert row is not None, "inserted just above (or by the writer it waited for)"
        return row[0], row[1]

    def _write(
        self,
        conn: psycopg.Connection,
        store: str,
        key: bytes,
        value: bytes,
        exp_us: int,
        now_us: int,
        locked: bool = False,
    ) -> None:
        for attempt in range(2):
            _, used = self._lock_store(conn, store) if not locked or attempt else self._usage_locked(conn, store)
            row = conn.execute(
                "SELECT length(value) FROM hive_kv_items WHERE store = %s AND key = %s", (store, key)
            ).fetchone()
            grow = len(value) - row[0] if row is not None else len(key) + len(value)
            if grow <= 0 or used + grow <= self.quota_bytes:
                break
            # Expired keys still count until purged: purge some of this store's before refusing.
            if attempt == 1 or self._purge(conn, now_us, _QUOTA_PURGE, store) == 0:
                raise QuotaExceeded(
                    f"store {store!r} would hold {used + grow} bytes, over its quota of {self.quota_bytes}: "
                    "delete keys or set shorter TTLs",
                    store=store,
                    used_bytes=used,
                    quota_bytes=self.quota_bytes,
                )
        conn.execute(
            "INSERT INTO hive_kv_items (store, key, value, expires_us) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (store, key) DO UPDATE SET value = EXCLUDED.value, expires_us = EXCLUDED.expires_us",
            (store, key, value, exp_us),
        )
        self._account(conn, store, 0 if row is not None else 1, grow)

    def _usage_locked(self, conn: psycopg.Connection, store: str) -> tuple[int, int]:
        row = conn.execute("SELECT keys, bytes FROM hive_kv_stores WHERE store = %s", (store,)).fetchone()
        assert row is not None, "the caller holds this row's lock"
        return row[0], row[1]

    def _account(self, conn: psycopg.Connection, store: str, keys: int, size: int) -> None:
        row = conn.execute(
            "UPDATE hive_kv_stores SET keys = keys + %s, bytes = bytes + %s WHERE store = %s RETURNING keys, bytes",
            (keys, size, store),
        ).fetchone()
        if row is None or row[0] < 0 or row[1] < 0:
            raise KvError(f"KV accounting of store {store!r} went negative; the store is inconsistent")

    def _purge(self, conn: psycopg.Connection, now_us: int, limit: int, store: str | None = None) -> int:
        """Remove up to `limit` expired keys, oldest expiry first (of one store, whose lock is held)."""
        if store is None:
            rows = conn.execute(
                "SELECT store, key FROM hive_kv_items WHERE expires_us <> 0 AND expires_us <= %s "
                "ORDER BY expires_us LIMIT %s",
                (now_us, limit),
            ).fetchall()
            for name in sorted({r[0] for r in rows}):  # in name order: no lock cycle with another purge
                conn.execute("SELECT 1 FROM hive_kv_stores WHERE store = %s FOR UPDATE", (name,))
        else:
            rows = conn.execute(
                "SELECT store, key FROM hive_kv_items WHERE store = %s AND expires_us <> 0 "
                "AND expires_us <= %s ORDER BY expires_us LIMIT %s",
                (store, now_us, limit),
            ).fetchall()
        if not rows:
            return 0
        # Checked again under the lock: a writer may have given a key a new expiry meanwhile.
        gone = conn.execute(
            "DELETE FROM hive_kv_items i USING unnest(%s::text[], %s::bytea[]) AS d(store, key) "
            "WHERE i.store = d.store AND i.key = d.key AND i.expires_us <> 0 AND i.expires_us <= %s "
            "RETURNING i.store, length(i.key) + length(i.value)",
            ([r[0] for r in rows], [r[1] for r in rows], now_us),
        ).fetchall()
        per: dict[str, list[int]] = {}
        for name, size in gone:
            u = per.setdefault(name, [0, 0])
            u[0] += 1
            u[1] += size
        for name in sorted(per):
            self._account(conn, name, -per[name][0], -per[name][1])
        return len(gone)


def check_integrity(kv: PgKv) -> list[str]:
    """Problems found comparing the accounting with the stored keys; empty when they agree."""
    with kv._conn() as conn:
        stored = {
            r[0]: (r[1], r[2])
            for r in conn.execute("SELECT store, keys, bytes FROM hive_kv_stores WHERE keys > 0 OR bytes <> 0")
        }
        found = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                "SELECT store, count(*), sum(length(key) + length(value))::bigint FROM hive_kv_items GROUP BY store"
            )
        }
    return [
        f"store {name!r}: accounted {stored.get(name)}, found {found.get(name)}"
        for name in sorted(stored.keys() | found.keys())
        if stored.get(name) != found.get(name)
    ]
