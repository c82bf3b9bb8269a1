"""The LMDB backend shared by real processes (spawned, as workers are after fork): atomic counters,
exact accounting under concurrent writers, visibility, and writes that outlive a killed process."""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hive.kv import KvFull, NotANumber, QuotaExceeded, StoreUsage
from hive.kv.lmdb import LmdbKv, check_integrity

WRITERS = 4
INCRS = 1000  # per writer
MIXED_OPS = 300  # per writer
CTX = multiprocessing.get_context("spawn")


def _report(results: Any, who: str, fn: Callable[[], Any]) -> None:
    try:
        results.put((who, "ok", fn()))
    except BaseException:
        results.put((who, "error", traceback.format_exc()))


def _run(procs: list[Any], results: Any) -> dict[str, Any]:
    for p in procs:
        p.start()
    try:
        outcomes = {who: (status, value) for who, status, value in (results.get(timeout=120) for _ in procs)}
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    errors = {who: value for who, (status, value) in outcomes.items() if status != "ok"}
    assert not errors, "\n".join(f"{who}:\n{tb}" for who, tb in errors.items())
    assert all(p.exitcode == 0 for p in procs)
    return {who: value for who, (_, value) in outcomes.items()}


def _incr_worker(path: str, index: int, start: Any, results: Any) -> None:
    def work() -> list[int]:
        kv = LmdbKv(path, map_size_mb=64, sync=False)
        start.wait(60)
        seen = []
        for _ in range(INCRS):
            seen.append(kv.incr("counters", b"shared"))
            kv.incr("counters", b"own%d" % index, 2)
        kv.close()
        return seen

    _report(results, f"writer{index}", work)


def test_concurrent_incr_is_exact(tmp_path: Path) -> None:
    path = str(tmp_path / "kv.lmdb")
    LmdbKv(path, map_size_mb=64).close()  # create the environment before the race
    start = CTX.Barrier(WRITERS)
    results = CTX.Queue()
    procs = [CTX.Process(target=_incr_worker, args=(path, i, start, results)) for i in range(WRITERS)]
    seen = _run(procs, results)
    # Every increment answered a distinct value: none was lost or applied twice.
    answers = sorted(v for values in seen.values() for v in values)
    assert answers == list(range(1, WRITERS * INCRS + 1))
    for values in seen.values():
        assert values == sorted(values)
    with LmdbKv(path, map_size_mb=64) as kv:
        assert kv.get("counters", b"shared") == b"%d" % (WRITERS * INCRS)
        for i in range(WRITERS):
            assert kv.get("counters", b"own%d" % i) == b"%d" % (2 * INCRS)
        digits = len(b"shared") + len(b"%d" % (WRITERS * INCRS)) + WRITERS * (len(b"own0") + len(b"%d" % (2 * INCRS)))
        assert kv.stores() == [StoreUsage("counters", WRITERS + 1, digits)]
        assert check_integrity(kv) == []


def _mixed_worker(path: str, index: int, start: Any, results: Any) -> None:
    def work() -> int:
        kv = LmdbKv(path, map_size_mb=64, quota_bytes=200_000, sync=False)
        rng = random.Random(index)
        start.wait(60)
        refused = 0
        for _ in range(MIXED_OPS):
            store = rng.choice(["a", "b"])
            key = b"k%d" % rng.randrange(40) + b"L" * rng.choice([0, 0, 500])  # some take the long-key path
            op = rng.random()
            try:
                if op < 0.5:
                    kv.set(
                        store,
                        key,
                        os.urandom(rng.choice([0, 10, 3000, 20_000])),
                        ttl_s=rng.choice([None, None, 0.01, 60]),
                    )
                elif op < 0.7:
                    kv.delete(store, key)
                elif op < 0.8:
                    kv.purge_expired(limit=5)
                else:
                    kv.set(store, key, b"%d" % rng.randrange(100))
                    kv.incr(store, key, rng.randrange(-5, 5))
            except QuotaExceeded:
                refused += 1
            except NotANumber:
                pass  # another writer put random bytes there between our set and incr
        kv.close()
        return refused

    _report(results, f"writer{index}", work)


def test_concurrent_writers_keep_accounting_exact(tmp_path: Path) -> None:
    """Sets, overwrites, deletes, TTLs, purges and counters race in overlapping keys of two stores
    against a quota; afterwards the accounted bytes and keys equal what is stored."""
    path = str(tmp_path / "kv.lmdb")
    LmdbKv(path, map_size_mb=64).close()
    start = CTX.Barrier(WRITERS)
    results = CTX.Queue()
    procs = [CTX.Process(target=_mixed_worker, args=(path, i, start, results)) for i in range(WRITERS)]
    refused = _run(procs, results)
    with LmdbKv(path, map_size_mb=64, quota_bytes=200_000) as kv:
        assert check_integrity(kv) == []
        assert all(s.bytes <= 200_000 for s in kv.stores())
        assert sum(refused.values()) > 0, "the quota was never reached: the race did not test it"
        kv.purge_expired(now=1e12)
        assert check_integrity(kv) == []


def _ping_pong(path: str, to_child: Any, to_parent: Any, rounds: int) -> None:
    def work() -> int:
        kv = LmdbKv(path, map_size_mb=64)
        for _ in range(rounds):
            i = to_child.get(timeout=60)
            assert kv.get("default", b"from-parent") == b"%d" % i, "the parent's set was not visible"
            kv.set("default", b"from-child", b"%d" % i)
            to_parent.put(("ack", "ok", i))
        kv.close()
        return rounds

    _report(to_parent, "child", work)


def test_a_set_is_visible_in_another_process_at_once(tmp_path: Path) -> None:
    path = str(tmp_path / "kv.lmdb")
    rounds = 30
    with LmdbKv(path, map_size_mb=64) as kv:
        to_child, to_parent = CTX.Queue(), CTX.Queue()
        child = CTX.Process(target=_ping_pong, args=(path, to_child, to_parent, rounds))
        child.start()
        try:
            for i in range(rounds):
                kv.set("default", b"from-parent", b"%d" % i)
                to_child.put(i)
                who, status, value = to_parent.get(timeout=60)
                assert (who, status) == ("ack", "ok"), value
                assert kv.get("default", b"from-child") == b"%d" % i
            assert to_parent.get(timeout=60) == ("child", "ok", rounds)
        finally:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
        assert child.exitcode == 0


def _write_then_die(path: str, written: Any) -> None:
    kv = LmdbKv(path, map_size_mb=64)  # sync=True: each commit is on disk when set returns
    kv.set("default", b"k", b"written before the kill")
    assert kv.incr("default", b"n", 7) == 7
    with kv.env.begin():  # die holding a reader slot and an open transaction
        written.set()  # an Event, not a Queue: a queue's feeder thread would not flush before the kill
        os.kill(os.getpid(), signal.SIGKILL)


def test_writes_outlive_a_killed_process(tmp_path: Path) -> None:
    path = str(tmp_path / "kv.lmdb")
    written = CTX.Event()
    child = CTX.Process(target=_write_then_die, args=(path, written))
    child.start()
    try:
        assert written.wait(60)
    finally:
        child.join(timeout=30)
        if child.is_alive():
            child.kill()
    assert child.exitcode == -signal.SIGKILL
    with LmdbKv(path, map_size_mb=64) as kv:
        assert kv.get("default", b"k") == b"written before the kill"
        assert kv.incr("default", b"n") == 8  # the writer lock is free again
        assert check_integrity(kv) == []


def test_full_map_error_reaches_every_process(tmp_path: Path) -> None:
    """A map filled by one process refuses writes in another with kv_full, and deletes there still work."""
    path = str(tmp_path / "kv.lmdb")
    with LmdbKv(path, map_size_mb=4, sync=False) as kv:
        n = 0
        for i in range(10_000):
            try:
                kv.set("default", b"k%05d" % i, b"x" * 3000)
            except KvFull:
                break
            n += 1
        results = CTX.Queue()
        child = CTX.Process(target=_full_child, args=(path, n, results))
        child.start()
        try:
            who, status, value = results.get(timeout=60)
        finally:
            child.join(timeout=30)
            if child.is_alive():
                child.kill()
        assert (who, status) == ("child", "ok"), value
        assert value == ("kv_full", n)
        assert kv.stores() == []


def _full_child(path: str, n: int, results: Any) -> None:
    def work() -> tuple[str, int]:
        kv = LmdbKv(path, map_size_mb=4, sync=False)
        try:
            kv.set("default", b"k%05d" % n, b"x" * 3000)
            code = "accepted"
        except KvFull as e:
            code = e.code
        deleted = sum(kv.delete("default", b"k%05d" % i) for i in range(n))
        kv.close()
        return code, deleted

    _report(results, "child", work)
