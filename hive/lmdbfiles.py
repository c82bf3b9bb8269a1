"""Checks shared by the server's LMDB environments (registry, KV, rate limits). A leaf."""

from __future__ import annotations

from pathlib import Path

import lmdb

from hive.errors import RegistryDamaged


def check_not_truncated(env: lmdb.Environment, path: Path, what: str = "the registry") -> None:
    """Refuse an LMDB data.mdb shorter than the pages its meta page says are in use (a truncated copy
    or restore): every process would die of SIGBUS on its first read. Call it right after
    lmdb.open, before any read."""
    data = path / "data.mdb"
    used = (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    size = data.stat().st_size
    if size < used:
        raise RegistryDamaged(
            f"{what} {data} is damaged: the file has {size} bytes but LMDB's meta page says "
            f"{used} are in use (it was truncated, e.g. by a copy that did not finish or a full disk). "
            f"Stop the server and restore {path} from a backup (or an `mdb_copy` of a good one), "
            f"or move it aside to start empty"
        )
