"""The PostgreSQL server of the cluster-mode tests (tests/cluster/pgserver.py): one per session, in a temp
dir, on a free loopback port, as an unprivileged user; stopped after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.cluster import pgserver


@pytest.fixture(scope="session")
def postgres() -> Iterator[pgserver.PgServer]:
    server = pgserver.acquire()
    yield server
    pgserver.release(server)


@pytest.fixture(scope="session")
def postgres_dsn(postgres: pgserver.PgServer) -> str:
    """A database of its own for the session's cluster tests."""
    return postgres.new_database("cluster")
