"""The PostgreSQL backend beyond the shared contract: real spawned processes writing at once (exact
counters, exact accounting and quotas, as the nodes of a cluster do), list's bounded scan, and a
server that stops and comes back (503 kv_unavailable meanwhile, then working again by itself)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from hive.kv import KvUnavailable, QuotaExceeded, StoreUsage
from hive.kv.postgres import PgKv, check_integrity
from tests.cluster import pgserver
from tests.kv.test_kv_processes import _report, _run

WRITERS = 4
INCRS = 300  # per writer
CTX = multiprocessing.get_context("spawn")


@pytest.fixture
def dsn(postgres_kv_dsn: str) -> Iterator[str]:
    with PgKv(postgres_kv_dsn) as kv:
        kv.stores()
    with psycopg.connect(postgres_kv_dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE hive_kv_items, hive_kv_stores")
    yield postgres_kv_dsn


def _incr_worker(dsn: str, index: int, start: Any, results: Any) -> None:
    def work() -> list[int]:
        kv = PgKv(dsn)
        start.wait(60)
        seen = []
        for _ in range(INCRS):
            seen.append(kv.incr("counters", b"shared"))
            kv.incr("counters", b"own%d" % index, 2)
        kv.close()
        return seen

    _report(results, f"writer{index}", work)


def test_concurrent_incr_is_exact(dsn: str) -> None:
    start = CTX.Barrier(WRITERS)
    results = CTX.Queue()
    seen = _run([CTX.Process(target=_incr_worker, args=(dsn, i, start, results)) for i in range(WRITERS)], results)
    answers = sorted(v for values in seen.values() for v in values)
    assert answers == list(range(1, WRITERS * INCRS + 1))  # none lost, none applied twice
    with PgKv(dsn) as kv:
        assert kv.get("counters", b"shared") == b"%d" % (WRITERS * INCRS)
        digits = len(b"shared") + len(b"%d" % (WRITERS * INCRS)) + WRITERS * (len(b"own0") + len(b"%d" % (2 * INCRS)))
        assert kv.stores() == [StoreUsage("counters", WRITERS + 1, digits)]
        assert check_integrity(kv) == []


QUOTA = 20_000
ENTRY = 100  # a 4-byte key and a 96-byte value


def _fill_worker(dsn: str, index: int, start: Any, results: Any) -> None:
    def work() -> int:
        kv = PgKv(dsn, quota_bytes=QUOTA)
        start.wait(60)
        stored = 0
        for i in range(QUOTA // ENTRY + 1):
            try:
                kv.set("full", b"%d%03d" % (index, i), b"v" * (ENTRY - 4))
            except QuotaExceeded:
                # Another writer may free nothing: once refused, the store is at its quota.
                break
            kv.set("other", b"%d%03d" % (index, i), b"x")  # a second store never waits for the first
            stored += 1
        kv.close()
        return stored

    _report(results, f"writer{index}", work)


def test_concurrent_writers_fill_the_quota_exactly(dsn: str) -> None:
    start = CTX.Barrier(WRITERS)
    results = CTX.Queue()
    stored = _run([CTX.Process(target=_fill_worker, args=(dsn, i, start, results)) for i in range(WRITERS)], results)
    assert sum(stored.values()) == QUOTA // ENTRY  # not one entry more, not one fewer
    with PgKv(dsn, quota_bytes=QUOTA) as kv:
        assert kv.usage("full") == QUOTA
        with pytest.raises(QuotaExceeded):
            kv.set("full", b"more", b"")
        assert check_integrity(kv) == []


def test_list_scan_is_bounded(dsn: str) -> None:
    with PgKv(dsn) as kv:
        kv.scan_budget = 10
        for i in range(25):
            kv.set("s", b"k%02d" % i, b"v", ttl_s=1 if i < 15 else None, now=1000.0)
        page = kv.list("s", now=2000.0)  # 15 expired keys first: the first call reads 10 and stops
        assert page.keys == [] and page.next_cursor == b"k09"
        page = kv.list("s", cursor=page.next_cursor, now=2000.0)
        assert page.keys == [b"k15", b"k16", b"k17", b"k18", b"k19"] and page.next_cursor == b"k19"
        page = kv.list("s", cursor=page.next_cursor, now=2000.0)
        assert page == ([b"k20", b"k21", b"k22", b"k23", b"k24"], None)


def test_a_stopped_server_is_kv_unavailable_then_recovers(dsn: str) -> None:
    server = pgserver.acquire()
    try:
        with PgKv(dsn) as kv:
            kv.set("s", b"k", b"before")
            server.stop()
            for op in (lambda: kv.get("s", b"k"), lambda: kv.set("s", b"k", b"during"), lambda: kv.incr("s", b"n")):
                with pytest.raises(KvUnavailable) as e:
                    op()
                assert (e.value.code, e.value.status) == ("kv_unavailable", 503)
            server.start()
            assert kv.get("s", b"k") == b"before"  # the pool's dead connections are not reused
            kv.set("s", b"k", b"after")
            assert kv.get("s", b"k") == b"after"
            assert check_integrity(kv) == []
    finally:
        if server.pid() is None:
            server.start()
        pgserver.release(server)


def test_opening_needs_no_server() -> None:
    """A worker opens its KV handle while PostgreSQL is down (it serves from LMDB meanwhile)."""
    kv = PgKv("host=127.0.0.1 port=1 user=hive dbname=nothing connect_timeout=1")
    with pytest.raises(KvUnavailable):
        kv.get("s", b"k")
    kv.close()
    with pytest.raises(KvUnavailable):
        kv.get("s", b"k")
