"""Backends for the KV contract tests. A new backend adds a factory here and the contract in
test_kv_contract.py runs against it unchanged. PostgreSQL (cluster mode) runs on the session's throwaway
server (tests/cluster/pgserver.py), in a database of its own, emptied before each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from hive.kv import KvBackend
from hive.kv.lmdb import LmdbKv
from hive.kv.postgres import PgKv
from tests.cluster import pgserver

OpenKv = Callable[..., KvBackend]


def _lmdb(request: pytest.FixtureRequest, tmp_path: Path, **kw: Any) -> KvBackend:
    # sync=False: fsync is not what these tests are about, and it keeps them quick on a shared disk.
    return LmdbKv(tmp_path / "kv.lmdb", map_size_mb=64, sync=False, **kw)


def _postgres(request: pytest.FixtureRequest, tmp_path: Path, **kw: Any) -> KvBackend:
    return PgKv(request.getfixturevalue("postgres_kv_dsn"), **kw)


def _empty_postgres(request: pytest.FixtureRequest) -> None:
    dsn = request.getfixturevalue("postgres_kv_dsn")
    with PgKv(dsn) as kv:
        kv.stores()  # creates the tables on first use
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE hive_kv_items, hive_kv_stores")


BACKENDS: dict[str, Callable[..., KvBackend]] = {"lmdb": _lmdb, "postgres": _postgres}
EMPTY: dict[str, Callable[[pytest.FixtureRequest], None]] = {"postgres": _empty_postgres}


@pytest.fixture(scope="session")
def postgres_kv_dsn() -> Iterator[str]:
    server = pgserver.acquire()
    yield server.new_database("kv")
    pgserver.release(server)


@pytest.fixture(params=sorted(BACKENDS))
def open_kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenKv]:
    """Opens a fresh backend with the given options (quota_bytes=...); closes what it opened."""
    opened: list[KvBackend] = []
    if request.param in EMPTY:
        EMPTY[request.param](request)

    def open_(**kw: Any) -> KvBackend:
        kv = BACKENDS[request.param](request, tmp_path, **kw)
        opened.append(kv)
        return kv

    yield open_
    for kv in opened:
        kv.close()


@pytest.fixture
def kv(open_kv: OpenKv) -> KvBackend:
    return open_kv()
