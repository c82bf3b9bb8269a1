"""Backends for the KV contract tests. A new backend (PostgreSQL in cluster mode) adds a factory here
and the contract in test_kv_contract.py runs against it unchanged."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hive.kv import KvBackend
from hive.kv.lmdb import LmdbKv

OpenKv = Callable[..., KvBackend]


def _lmdb(tmp_path: Path, **kw: Any) -> KvBackend:
    # sync=False: fsync is not what these tests are about, and it keeps them quick on a shared disk.
    return LmdbKv(tmp_path / "kv.lmdb", map_size_mb=64, sync=False, **kw)


BACKENDS: dict[str, Callable[..., KvBackend]] = {"lmdb": _lmdb}


@pytest.fixture(params=sorted(BACKENDS))
def open_kv(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[OpenKv]:
    """Opens a fresh backend with the given options (quota_bytes=...); closes what it opened."""
    opened: list[KvBackend] = []

    def open_(**kw: Any) -> KvBackend:
        kv = BACKENDS[request.param](tmp_path, **kw)
        opened.append(kv)
        return kv

    yield open_
    for kv in opened:
        kv.close()


@pytest.fixture
def kv(open_kv: OpenKv) -> KvBackend:
    return open_kv()
