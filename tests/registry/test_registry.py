"""The LMDB registry: real LMDB in a temp dir, and real processes for concurrency."""

from __future__ import annotations

import multiprocessing
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hive.errors import FunctionNotFound, NotFound
from hive.manifest import Manifest, parse_manifest
from hive.registry import Registry, check_integrity, sha256_hex

MAP_MB = 64
KEEP = 3


def wasm(tag: str) -> bytes:
    return b"\0asm\x01\0\0\0" + tag.encode()  # the registry stores bytes; it does not validate them


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "registry.lmdb"


@pytest.fixture
def registry(path: Path) -> Iterator[Registry]:
    r = Registry(path, map_size_mb=MAP_MB, keep_versions=KEEP)
    yield r
    r.close()


def dump(registry: Registry) -> dict[str, dict[bytes, bytes]]:
    """Every record of every table, for before/after comparisons."""
    with registry.env.begin() as txn:
        return {
            db: dict(txn.cursor(db=getattr(registry, "_" + db)))
            for db in ("meta", "functions", "versions", "blobs", "refs")
        }


def stored_blobs(registry: Registry) -> set[str]:
    return {k.decode() for k in dump(registry)["blobs"]}


def test_empty_registry(registry: Registry) -> None:
    assert registry.generation() == 0
    assert registry.snapshot() == (0, {})
    assert registry.current("hello") is None
    with pytest.raises(FunctionNotFound):
        registry.versions("hello")
    with pytest.raises(NotFound):
        registry.blob(sha256_hex(b"nothing"))
    assert check_integrity(registry) == []


def test_deploy_and_read_back(registry: Registry) -> None:
    manifest = parse_manifest(b'{"limits": {"timeout_ms": 50}, "config": {"A": "1"}}')
    rec = registry.deploy("hello", wasm("v1"), manifest)
    assert (rec.name, rec.version, rec.sha256, rec.size) == ("hello", 1, sha256_hex(wasm("v1")), len(wasm("v1")))
    assert registry.current("hello") == rec
    assert registry.current("hello").manifest == manifest
    assert registry.versions("hello") == [rec]
    assert registry.blob(rec.sha256) == wasm("v1")
    assert registry.snapshot() == (1, {"hello": rec})
    assert registry.generation() == 1
    assert check_integrity(registry) == []


def test_each_deploy_is_a_new_current_version(registry: Registry) -> None:
    recs = [registry.deploy("hello", wasm(f"v{i}"), Manifest()) for i in range(1, 4)]
    assert [r.version for r in recs] == [1, 2, 3]
    assert registry.current("hello") == recs[-1]
    assert registry.versions("hello") == recs
    assert registry.generation() == 3
    assert check_integrity(registry) == []


def test_generation_bumps_on_every_change(registry: Registry) -> None:
    gens = [registry.generation()]
    registry.deploy("a", wasm("a1"), Manifest())
    gens.append(registry.generation())
    registry.deploy("b", wasm("b1"), Manifest())
    gens.append(registry.generation())
    registry.deploy("a", wasm("a2"), Manifest())
    gens.append(registry.generation())
    registry.set_current("a", 1)
    gens.append(registry.generation())
    registry.delete("b")
    gens.append(registry.generation())
    assert gens == [0, 1, 2, 3, 4, 5]
    assert check_integrity(registry) == []


def test_set_current_rolls_back_and_forward(registry: Registry) -> None:
    v1 = registry.deploy("hello", wasm("v1"), Manifest())
    v2 = registry.deploy("hello", wasm("v2"), Manifest())
    assert registry.set_current("hello", 1) == v1
    assert registry.current("hello") == v1
    assert registry.snapshot()[1]["hello"] == v1
    assert registry.versions("hello") == [v1, v2]  # rollback keeps every version
    assert registry.set_current("hello", 2) == v2
    assert registry.current("hello") == v2
    assert check_integrity(registry) == []


def test_set_current_to_missing_version_or_function_changes_nothing(registry: Registry) -> None:
    registry.deploy("hello", wasm("v1"), Manifest())
    before = dump(registry)
    with pytest.raises(NotFound):
        registry.set_current("hello", 7)
    with pytest.raises(FunctionNotFound):
        registry.set_current("nope", 1)
    assert dump(registry) == before


def test_deploy_after_rollback_becomes_current(registry: Registry) -> None:
    registry.deploy("hello", wasm("v1"), Manifest())
    registry.deploy("hello", wasm("v2"), Manifest())
    registry.set_current("hello", 1)
    v3 = registry.deploy("hello", wasm("v3"), Manifest())
    assert v3.version == 3
    assert registry.current("hello") == v3


def test_delete_removes_function_versions_and_blobs(registry: Registry) -> None:
    registry.deploy("hello", wasm("v1"), Manifest())
    registry.deploy("hello", wasm("v2"), Manifest())
    keep = registry.deploy("other", wasm("o1"), Manifest())
    registry.delete("hello")
    assert registry.current("hello") is None
    with pytest.raises(FunctionNotFound):
        registry.versions("hello")
    assert registry.snapshot() == (4, {"other": keep})
    assert stored_blobs(registry) == {keep.sha256}
    assert check_integrity(registry) == []


def test_delete_missing_function_changes_nothing(registry: Registry) -> None:
    registry.deploy("hello", wasm("v1"), Manifest())
    before = dump(registry)
    with pytest.raises(FunctionNotFound):
        registry.delete("nope")
    assert dump(registry) == before


def test_redeploy_after_delete_starts_again(registry: Registry) -> None:
    registry.deploy("hello", wasm("v1"), Manifest())
    registry.delete("hello")
    rec = registry.deploy("hello", wasm("again"), Manifest())
    assert rec.version == 1
    assert registry.versions("hello") == [rec]
    assert check_integrity(registry) == []


def test_keep_versions_prunes_old_versions_and_their_blobs(registry: Registry) -> None:
    recs = [registry.deploy("hello", wasm(f"v{i}"), Manifest()) for i in range(1, 7)]
    assert [r.version for r in registry.versions("hello")] == [4, 5, 6]
    assert stored_blobs(registry) == {r.sha256 for r in recs[-KEEP:]}
    for old in recs[:-KEEP]:
        with pytest.raises(NotFound):
            registry.blob(old.sha256)
    with pytest.raises(NotFound):
        registry.set_current("hello", 3)
    assert check_integrity(registry) == []


def test_blob_shared_by_versions_is_refcounted(registry: Registry) -> None:
    same = wasm("same")
    registry.deploy("hello", same, Manifest())  # v1
    registry.deploy("hello", wasm("other"), Manifest())  # v2
    registry.deploy("hello", same, Manifest())  # v3
    registry.deploy("hello", wasm("x"), Manifest())  # v4 prunes v1, but v3 still uses `same`
    assert [r.version for r in registry.versions("hello")] == [2, 3, 4]
    assert registry.blob(sha256_hex(same)) == same
    assert dump(registry)["refs"][sha256_hex(same).encode()] == (1).to_bytes(4, "big")
    assert check_integrity(registry) == []
    registry.deploy("hello", wasm("y"), Manifest())  # prunes v2
    registry.deploy("hello", wasm("z"), Manifest())  # prunes v3: the last user of `same`
    with pytest.raises(NotFound):
        registry.blob(sha256_hex(same))
    assert check_integrity(registry) == []


def test_blob_shared_by_two_functions_survives_deleting_one(registry: Registry) -> None:
    same = wasm("shared")
    registry.deploy("a", same, Manifest())
    registry.deploy("b", same, Manifest())
    assert len(dump(registry)["blobs"]) == 1
    registry.delete("a")
    assert registry.blob(sha256_hex(same)) == same
    assert check_integrity(registry) == []
    registry.delete("b")
    assert stored_blobs(registry) == set()
    assert dump(registry)["refs"] == {}
    assert check_integrity(registry) == []


def test_names_that_share_a_prefix_stay_apart(registry: Registry) -> None:
    registry.deploy("a", wasm("a1"), Manifest())
    for i in range(5):
        registry.deploy("a-b", wasm(f"ab{i}"), Manifest())
    registry.deploy("a", wasm("a2"), Manifest())
    assert [r.version for r in registry.versions("a")] == [1, 2]
    assert [r.version for r in registry.versions("a-b")] == [3, 4, 5]
    registry.delete("a")
    assert [r.version for r in registry.versions("a-b")] == [3, 4, 5]
    assert check_integrity(registry) == []


def test_reopening_sees_the_same_state(path: Path) -> None:
    r = Registry(path, map_size_mb=MAP_MB, keep_versions=KEEP)
    r.deploy("a", wasm("a1"), parse_manifest(b'{"wasi": ["random"]}'))
    r.deploy("a", wasm("a2"), Manifest())
    r.deploy("b", wasm("b1"), Manifest())
    r.set_current("a", 1)
    before = (r.snapshot(), r.versions("a"), r.versions("b"), dump(r))
    r.close()
    r2 = Registry(path, map_size_mb=MAP_MB, keep_versions=KEEP)
    try:
        assert (r2.snapshot(), r2.versions("a"), r2.versions("b"), dump(r2)) == before
        assert r2.current("a").manifest.wasi == ["random"]
        assert check_integrity(r2) == []
    finally:
        r2.close()


def test_failed_write_transaction_changes_nothing(registry: Registry) -> None:
    registry.deploy("hello", wasm("v1"), Manifest())
    before = dump(registry)
    with pytest.raises(RuntimeError), registry.env.begin(write=True) as txn:
        txn.put(b"ghost", b"junk", db=registry._functions)
        txn.delete(b"hello", db=registry._functions)
        registry._bump(txn)
        raise RuntimeError("boom")
    assert dump(registry) == before
    assert check_integrity(registry) == []


@pytest.mark.parametrize("value", ["text", None, 42])
def test_deploy_of_non_bytes_changes_nothing(registry: Registry, value: Any) -> None:
    first = registry.deploy("hello", wasm("v1"), Manifest())
    before = dump(registry)
    with pytest.raises(TypeError):
        registry.deploy("hello", value, Manifest())
    with pytest.raises(TypeError):  # even naming a blob that exists
        registry.deploy("hello", value, Manifest(), sha256=first.sha256)
    assert dump(registry) == before
    assert check_integrity(registry) == []


def test_deploy_that_fails_midway_changes_nothing(registry: Registry) -> None:
    registry.deploy("hello", wasm("v1"), Manifest())
    before = dump(registry)
    with pytest.raises(TypeError):
        # The blob and its refcount are written before the record fails to encode.
        registry.deploy("hello", wasm("v2"), object())  # type: ignore[arg-type]
    assert dump(registry) == before
    assert check_integrity(registry) == []


def test_check_integrity_finds_problems(registry: Registry) -> None:
    rec = registry.deploy("hello", wasm("v1"), Manifest())
    with registry.env.begin(write=True) as txn:
        txn.put(b"orphan", b"x", db=registry._blobs)
        txn.put(rec.sha256.encode(), (5).to_bytes(4, "big"), db=registry._refs)
    problems = check_integrity(registry)
    assert any("orphan" in p for p in problems)
    assert any("refcount" in p for p in problems)
    with registry.env.begin(write=True) as txn:
        txn.delete(rec.sha256.encode(), db=registry._blobs)
    assert any("missing" in p for p in check_integrity(registry))


# --- concurrency with real processes ---

WRITERS = 3
DEPLOYS = 24  # per writer, alternating between "shared" and the writer's own function
MAX_SNAPSHOTS = 100_000  # the reader stops at the final generation or after this many


def _report(results: Any, who: str, fn: Any, *args: Any) -> None:
    try:
        results.put((who, "ok", fn(*args)))
    except BaseException:
        results.put((who, "error", traceback.format_exc()))


def _writer(path: str, index: int, start: Any, results: Any) -> None:
    def work() -> int:
        registry = Registry(path, map_size_mb=MAP_MB, keep_versions=KEEP)
        start.wait(60)
        for j in range(DEPLOYS):
            name = "shared" if j % 2 == 0 else f"own{index}"
            # Blobs repeat across versions and functions, so refcounts go above one and back.
            registry.deploy(name, wasm(f"blob{(index + j) % 5}"), Manifest())
        registry.close()
        return DEPLOYS

    _report(results, f"writer{index}", work)


def _reader(path: str, start: Any, results: Any) -> None:
    def work() -> list[int]:
        registry = Registry(path, map_size_mb=MAP_MB, keep_versions=KEEP)
        start.wait(60)
        seen = []
        last = 0
        for _ in range(MAX_SNAPSHOTS):
            gen, current = registry.snapshot()
            assert gen >= last, f"generation went back from {last} to {gen}"
            last = gen
            # Only deploys happen, so in one consistent snapshot every write shows as a version.
            assert gen == sum(rec.version for rec in current.values()), (gen, current)
            for name, rec in current.items():
                assert rec.name == name
            assert check_integrity(registry) == []
            seen.append(gen)
            if gen == WRITERS * DEPLOYS:
                break
        registry.close()
        return seen

    _report(results, "reader", work)


def test_concurrent_writer_and_reader_processes(path: Path) -> None:
    Registry(path, map_size_mb=MAP_MB, keep_versions=KEEP).close()  # create the env before the race
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WRITERS + 1)
    results = ctx.Queue()
    procs = [ctx.Process(target=_writer, args=(str(path), i, start, results)) for i in range(WRITERS)]
    procs.append(ctx.Process(target=_reader, args=(str(path), start, results)))
    for p in procs:
        p.start()
    try:
        outcomes = dict((who, (status, value)) for who, status, value in (results.get(timeout=120) for _ in procs))
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
    errors = {who: value for who, (status, value) in outcomes.items() if status != "ok"}
    assert not errors, "\n".join(f"{who}:\n{tb}" for who, tb in errors.items())
    assert all(p.exitcode == 0 for p in procs)

    registry = Registry(path, map_size_mb=MAP_MB, keep_versions=KEEP)
    try:
        total = WRITERS * DEPLOYS
        assert registry.generation() == total
        shared = WRITERS * DEPLOYS // 2
        assert [r.version for r in registry.versions("shared")] == list(range(shared - KEEP + 1, shared + 1))
        for i in range(WRITERS):
            own = DEPLOYS // 2
            assert [r.version for r in registry.versions(f"own{i}")] == list(range(own - KEEP + 1, own + 1))
        gen, current = registry.snapshot()
        assert gen == total
        assert set(current) == {"shared"} | {f"own{i}" for i in range(WRITERS)}
        assert check_integrity(registry) == []
        assert outcomes["reader"][1][-1] <= total
    finally:
        registry.close()
