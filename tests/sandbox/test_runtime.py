"""The warm pool: a real Registry (LMDB) and a real Sandbox (wasmtime) in a temp dir."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from wasmtime import wat2wasm

from hive import abi
from hive.errors import FunctionNotFound, GuestTrap, Timeout
from hive.manifest import Manifest, parse_manifest
from hive.registry import Registry
from hive.runtime import Runtime, env_for, limits_for
from hive.sandbox import Sandbox
from hive.settings import Settings, load_settings


def const_guest(body: bytes, *fields: str, trap_over: int | None = None) -> bytes:
    """Answers 200 with `body`; with trap_over, traps on requests longer than that many bytes."""
    raw = abi.encode_response(abi.Response(200, [], body))
    escaped = "".join(f"\\{b:02x}" for b in raw)
    trap = f"(if (i32.gt_u (local.get $len) (i32.const {trap_over})) (then unreachable))" if trap_over else ""
    return bytes(
        wat2wasm(f"""
(module
  {" ".join(fields)}
  (memory (export "memory") 1)
  (func (export "hive_abi_v1"))
  (func (export "hive_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "hive_handle") (param $ptr i32) (param $len i32) (result i64)
    {trap}
    (i64.const {(8192 << 32) | len(raw)}))
  (data (i32.const 8192) "{escaped}"))
""")
    )


LOOP = bytes(
    wat2wasm("""
(module
  (memory (export "memory") 1)
  (func (export "hive_abi_v1"))
  (func (export "hive_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "hive_handle") (param i32 i32) (result i64) (loop $l (br $l)) (i64.const 0)))
""")
)

SMALL = abi.encode_request(b"GET", b"/", b"", [], b"")
BIG = abi.encode_request(b"POST", b"/", b"", [], b"x" * 100)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    config = tmp_path / "hive.toml"
    config.write_text("")
    return load_settings(
        env={"HIVE_CONFIG": str(config)}, overrides={"data_dir": str(tmp_path / "data"), "keep_versions": 3}
    )


@pytest.fixture
def registry(settings: Settings) -> Iterator[Registry]:
    r = Registry(settings.data_path / "registry.lmdb", map_size_mb=64, keep_versions=settings.keep_versions)
    yield r
    r.close()


@pytest.fixture
def sandbox(settings: Settings) -> Iterator[Sandbox]:
    s = Sandbox(settings.data_path / "cache")
    yield s
    s.close()


@pytest.fixture
def runtime(settings: Settings, registry: Registry, sandbox: Sandbox) -> Runtime:
    return Runtime(settings, registry, sandbox)


def body(rt: Runtime, name: str, envelope: bytes = SMALL) -> bytes:
    return rt.invoke(rt.lookup(name), envelope)[0].body


def test_sync_with_an_empty_registry(runtime: Runtime) -> None:
    assert runtime.sync() is True
    assert runtime.functions == {}
    assert runtime.generation == 0
    assert runtime.readiness()[0] is True
    assert runtime.sync() is False


def test_sync_loads_deployed_functions_warm(runtime: Runtime, registry: Registry) -> None:
    registry.deploy("hello", const_guest(b"hello"), Manifest())
    registry.deploy("other", const_guest(b"other"), Manifest())
    assert runtime.readiness()[0] is False  # never synced
    assert runtime.sync() is True
    for name in ("hello", "other"):
        loaded = runtime.lookup(name)
        assert loaded.record == registry.current(name)
        assert len(loaded.idle) == 1  # instantiated before any request
    assert runtime.generation == registry.generation() == 2
    ok, info = runtime.readiness(detail=True)
    assert ok and info["warm"] == 2 and info["cold"] == [] and info["failed"] == {}
    warm = runtime.lookup("hello").idle[0]
    assert body(runtime, "hello") == b"hello"
    assert runtime.lookup("hello").idle == [warm]  # served by the warm instance, which went back
    assert body(runtime, "other") == b"other"
    assert runtime.sync() is False


def test_new_deploy_swaps_the_version_on_the_next_sync(runtime: Runtime, registry: Registry) -> None:
    registry.deploy("hello", const_guest(b"v1"), Manifest())
    runtime.sync()
    old = runtime.lookup("hello")
    registry.deploy("hello", const_guest(b"v2"), Manifest())
    assert runtime.lookup("hello") is old  # nothing changes until the sync
    assert runtime.sync() is True
    new = runtime.lookup("hello")
    assert new.record.version == 2
    assert len(new.idle) == 1
    assert old.retired and not new.retired
    assert body(runtime, "hello") == b"v2"


def test_the_request_path_reads_the_generation_once_per_loop_turn(runtime: Runtime, registry: Registry) -> None:
    """Requests read in one event-loop turn share one registry read (each LMDB call gives the GIL up);
    the next turn reads again, so a deploy is live for the next request that comes after it."""
    registry.deploy("hello", const_guest(b"v1"), Manifest())

    async def serve() -> None:
        runtime.sync_for_request()
        assert body(runtime, "hello") == b"v1"
        registry.deploy("hello", const_guest(b"v2"), Manifest())
        runtime.sync_for_request()  # the same turn: not read again
        assert body(runtime, "hello") == b"v1"
        await asyncio.sleep(0)  # the next turn
        runtime.sync_for_request()
        assert body(runtime, "hello") == b"v2"
        assert runtime.generation == registry.generation()

    asyncio.run(serve())
    runtime.sync_for_request()  # without a running loop: every call reads
    registry.deploy("hello", const_guest(b"v3"), Manifest())
    runtime.sync_for_request()
    assert body(runtime, "hello") == b"v3"


def test_a_request_in_flight_finishes_on_the_old_version(runtime: Runtime, registry: Registry) -> None:
    registry.deploy("hello", const_guest(b"v1"), Manifest())
    runtime.sync()
    old = runtime.lookup("hello")
    registry.deploy("hello", const_guest(b"v2"), Manifest())
    runtime.sync()
    assert runtime.invoke(old, SMALL)[0].body == b"v1"
    assert old.idle == []  # a retired version's instance is not kept
    assert body(runtime, "hello") == b"v2"


def test_rollback_swaps_back(runtime: Runtime, registry: Registry) -> None:
    registry.deploy("hello", const_guest(b"v1"), Manifest())
    registry.deploy("hello", const_guest(b"v2"), Manifest())
    runtime.sync()
    registry.set_current("hello", 1)
    assert runtime.sync() is True
    assert runtime.lookup("hello").record.version == 1
    assert body(runtime, "hello") == b"v1"


def test_delete_removes_the_function(runtime: Runtime, registry: Registry) -> None:
    registry.deploy("hello", const_guest(b"hello"), Manifest())
    registry.deploy("other", const_guest(b"other"), Manifest())
    runtime.sync()
    old = runtime.lookup("hello")
    registry.delete("hello")
    assert runtime.sync() is True
    with pytest.raises(FunctionNotFound):
        runtime.lookup("hello")
    assert old.retired
    assert body(runtime, "other") == b"other"


def test_a_trap_discards_the_instance_and_refill_warms_a_new_one(runtime: Runtime, registry: Registry) -> None:
    registry.deploy("fragile", const_guest(b"fine", trap_over=64), Manifest())
    runtime.sync()
    loaded = runtime.lookup("fragile")
    trapped = loaded.idle[0]
    with pytest.raises(GuestTrap):
        runtime.invoke(loaded, BIG)
    assert loaded.idle == []
    assert runtime.needs_refill
    assert runtime.readiness(detail=True)[1]["cold"] == ["fragile"]
    assert runtime.readiness()[1]["cold"] == 1  # the public view counts, it names nothing
    runtime.refill()
    assert not runtime.needs_refill
    assert len(loaded.idle) == 1 and loaded.idle[0] is not trapped
    assert runtime.invoke(loaded, SMALL)[0].body == b"fine"
    assert len(loaded.idle) == 1


def test_after_a_trap_the_next_request_gets_a_fresh_instance_even_before_refill(
    runtime: Runtime, registry: Registry
) -> None:
    registry.deploy("fragile", const_guest(b"fine", trap_over=64), Manifest())
    runtime.sync()
    loaded = runtime.lookup("fragile")
    with pytest.raises(GuestTrap):
        runtime.invoke(loaded, BIG)
    assert runtime.invoke(loaded, SMALL)[0].body == b"fine"
    assert len(loaded.idle) == 1


def test_the_manifest_time_limit_applies(runtime: Runtime, registry: Registry) -> None:
    registry.deploy("spin", LOOP, parse_manifest(b'{"limits": {"timeout_ms": 20}}'))
    registry.deploy("other", const_guest(b"other"), Manifest())
    runtime.sync()
    assert runtime.lookup("spin").limits.timeout_ms == 20
    with pytest.raises(Timeout):
        runtime.invoke(runtime.lookup("spin"), SMALL)
    assert body(runtime, "other") == b"other"


BAD_MODULES = {
    "not-wasm": (b"definitely not wasm", Manifest()),
    "forbidden-import": (const_guest(b"x", '(import "env" "system" (func (param i32) (result i32)))'), Manifest()),
    "not-granted": (
        const_guest(b"x", '(import "wasi_snapshot_preview1" "random_get" (func (param i32 i32) (result i32)))'),
        parse_manifest(b'{"wasi": ["clocks"]}'),
    ),
    "traps-at-start": (const_guest(b"x", "(func $start unreachable) (start $start)"), Manifest()),
}


@pytest.mark.parametrize("name", sorted(BAD_MODULES))
def test_an_invalid_blob_is_recorded_in_failed(runtime: Runtime, registry: Registry, name: str) -> None:
    wasm, manifest = BAD_MODULES[name]
    registry.deploy("good", const_guest(b"good"), Manifest())
    registry.deploy(name, wasm, manifest)
    assert runtime.sync() is True
    assert set(runtime.failed) == {name}
    assert runtime.failed[name].startswith("v1:")
    with pytest.raises(FunctionNotFound):
        runtime.lookup(name)
    assert body(runtime, "good") == b"good"
    # One function that cannot load does not make the worker unready (issue 11, item 5); the admin
    # view names it, the public one only counts it.
    ok, info = runtime.readiness(detail=True)
    assert ok and info["failed"] == runtime.failed
    assert runtime.readiness()[1]["failed"] == 1
    # A good deploy of the same name clears the failure.
    registry.deploy(name, const_guest(b"fixed"), Manifest())
    runtime.sync()
    assert runtime.failed == {}
    assert body(runtime, name) == b"fixed"


def test_a_failed_new_version_keeps_the_old_one_serving(runtime: Runtime, registry: Registry) -> None:
    registry.deploy("hello", const_guest(b"v1"), Manifest())
    runtime.sync()
    registry.deploy("hello", b"not wasm", Manifest())
    runtime.sync()
    assert "hello" in runtime.failed
    assert body(runtime, "hello") == b"v1"


def test_deleting_a_failed_function_clears_the_failure(runtime: Runtime, registry: Registry) -> None:
    registry.deploy("broken", b"not wasm", Manifest())
    runtime.sync()
    assert "broken" in runtime.failed
    registry.delete("broken")
    runtime.sync()
    assert runtime.failed == {}
    assert runtime.readiness()[0] is True


def test_a_corrupt_artifact_is_recompiled_from_the_blob(
    settings: Settings, registry: Registry, sandbox: Sandbox
) -> None:
    registry.deploy("hello", const_guest(b"hello"), Manifest())
    Runtime(settings, registry, sandbox).sync()  # compiles and writes the artifact
    artifact = sandbox.artifact_path(registry.current("hello").sha256)
    artifact.write_bytes(b"not a compiled module")
    worker = Runtime(settings, registry, sandbox)  # as a new worker would start
    worker.sync()
    assert worker.failed == {}
    assert body(worker, "hello") == b"hello"
    assert artifact.read_bytes() != b"not a compiled module"


def test_an_unloadable_function_is_recorded_in_failed(settings: Settings, registry: Registry, sandbox: Sandbox) -> None:
    registry.deploy("hello", const_guest(b"hello"), Manifest())
    registry.deploy("other", const_guest(b"other"), Manifest())
    sha = registry.current("hello").sha256
    with registry.env.begin(write=True) as txn:  # damage the stored module itself
        txn.put(sha.encode(), b"\0asm\x01\0\0\0junk", db=registry._blobs)
    worker = Runtime(settings, registry, sandbox)
    worker.sync()
    assert set(worker.failed) == {"hello"}
    assert body(worker, "other") == b"other"
    ok, detail = worker.readiness(detail=True)
    assert ok and "hello" in detail["failed"]


def test_limits_and_env_come_from_the_manifest(settings: Settings) -> None:
    defaults = limits_for(Manifest(), settings)
    assert (defaults.timeout_ms, defaults.memory_bytes, defaults.max_response_bytes) == (
        settings.timeout_ms,
        settings.memory_mb << 20,
        settings.max_response_bytes,
    )
    m = parse_manifest(
        b'{"limits": {"timeout_ms": 5, "memory_mb": 2, "max_response_bytes": 0}, "config": {"B": "2", "A": "x=y"}}'
    )
    lim = limits_for(m, settings)
    assert (lim.timeout_ms, lim.memory_bytes, lim.max_response_bytes) == (5, 2 << 20, 0)
    assert env_for(m) == [b"A=x=y", b"B=2"]
