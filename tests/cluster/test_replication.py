"""Cluster mode's parts in one process, on the real PostgreSQL and real LMDB: the PostgreSQL registry
(hive.cluster.store) keeps Registry's rules; NOTIFY payloads are small; Registry.apply_replica; a
Replicator catching up incrementally, copying everything when its mark does not fit, converging after
its LISTEN connection is killed; the Seat's lock elects one replicator."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import msgspec
import psycopg
import pytest

from hive.cluster import store
from hive.cluster.pg import connect
from hive.cluster.replicator import Mark, Replicator, Seat, read_state
from hive.errors import FunctionNotFound, NoPreviousVersion, NotFound, RegistryError
from hive.manifest import Manifest, parse_manifest
from hive.registry import FunctionRecord, FunctionState, Registry, VersionRecord, check_integrity, sha256_hex
from tests.cluster.pgserver import PgServer
from tests.support import poll

M = Manifest()


def wasm(i: int) -> bytes:
    return b"\x00asm\x01\x00\x00\x00" + b"%d" % i  # bytes only: nothing here compiles them


@pytest.fixture
def dsn(postgres: PgServer) -> str:
    return postgres.new_database("repl")


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    with connect(dsn) as c:
        store.create_schema(c)
        yield c


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    r = Registry(tmp_path / "registry.lmdb", map_size_mb=64)
    yield r
    r.close()


def deploy(conn: psycopg.Connection, name: str, i: int, manifest: Manifest = M, keep: int = 10) -> int:
    body = wasm(i)
    return store.deploy(conn, name, body, manifest, sha256_hex(body), keep)[1]


def same_as_cluster(conn: psycopg.Connection, registry: Registry) -> None:
    """The replica holds exactly the cluster's functions, versions and blobs."""
    names = store.function_names(conn)
    gen, current = registry.snapshot()
    assert sorted(current) == names
    for name, state in store.states(conn, names).items():
        assert state is not None
        assert registry.versions(name) == state.versions
        assert current[name].version == state.function.current
    assert check_integrity(registry) == []


# --- the PostgreSQL registry ---


def test_store_keeps_the_registry_rules(conn: psycopg.Connection) -> None:
    g1 = deploy(conn, "f", 1)
    g2 = deploy(conn, "f", 2)
    g3 = deploy(conn, "f", 1)  # the same module again: its blob is stored once
    assert (g1, g2, g3) == (1, 2, 3)
    assert conn.execute("SELECT refs FROM hive_blobs WHERE sha256 = %s", (sha256_hex(wasm(1)),)).fetchone() == (2,)
    rec, g = store.set_current(conn, "f", None)
    assert (rec.version, g) == (2, 4)
    rec, _ = store.set_current(conn, "f", 1)
    assert rec.version == 1 and rec.sha256 == sha256_hex(wasm(1))
    with pytest.raises(NoPreviousVersion):
        store.set_current(conn, "f", None)
    with pytest.raises(NotFound) as e:
        store.set_current(conn, "f", 9)
    assert "kept: 1, 2, 3" in e.value.message
    with pytest.raises(FunctionNotFound):
        store.set_current(conn, "nope", 1)
    with pytest.raises(FunctionNotFound):
        store.delete(conn, "nope")
    assert store.head(conn).generation == 5  # refused changes bump nothing
    for i in range(4, 8):
        deploy(conn, "f", i, keep=3)
    assert [v.version for v in store.states(conn, ["f"])["f"].versions] == [5, 6, 7]  # pruned
    blobs = {r[0]: r[1] for r in conn.execute("SELECT sha256, refs FROM hive_blobs")}
    assert blobs == {sha256_hex(wasm(i)): 1 for i in (5, 6, 7)}  # unused blobs are gone
    g = store.delete(conn, "f")
    assert g == store.head(conn).generation and store.function_names(conn) == []
    assert conn.execute("SELECT count(*) FROM hive_blobs").fetchone() == (0,)


def test_manifest_round_trips_exactly(conn: psycopg.Connection) -> None:
    m = parse_manifest(
        '{"limits": {"timeout_ms": 250}, "config": {"K": "v \\u00e9"}, "rate_limit": {"rps": 0.5}, '
        '"wasi": ["clocks"], "kv": ["cache"]}'
    )
    body = wasm(1)
    rec, _ = store.deploy(conn, "m", body, m, sha256_hex(body), 10)
    assert store.states(conn, ["m"])["m"].versions == [rec]


def test_notify_carries_the_generation_and_the_change_only(dsn: str, conn: psycopg.Connection) -> None:
    with connect(dsn) as listen:
        listen.execute(f"LISTEN {store.CHANNEL}")
        big = b"\x00asm\x01\x00\x00\x00" + b"x" * 200_000
        store.deploy(conn, "f" * 63, big, M, sha256_hex(big), 10)
        store.set_current(conn, "f" * 63, 1)
        store.delete(conn, "f" * 63)
        got = [n.payload for n in listen.notifies(timeout=5, stop_after=3)]
    assert [store.parse_notice(p) for p in got] == [
        store.Change(1, "deploy", "f" * 63, 1),
        store.Change(2, "rollback", "f" * 63, 1),
        store.Change(3, "delete", "f" * 63),
    ]
    assert all(len(p.encode()) < 200 for p in got)


# --- the LMDB side: apply_replica ---


def _state(name: str, current: int, versions: list[tuple[int, bytes]]) -> FunctionState:
    return FunctionState(
        FunctionRecord(name, current, max(v for v, _ in versions), 1.0),
        [VersionRecord(name, v, sha256_hex(b), len(b), 2.0, M) for v, b in versions],
    )


def test_apply_replica(registry: Registry) -> None:
    a, b = wasm(1), wasm(2)
    blobs = {sha256_hex(a): a, sha256_hex(b): b}
    g1 = registry.apply_replica({"f": _state("f", 2, [(1, a), (2, b)]), "g": _state("g", 1, [(1, a)])}, blobs, b"m1")
    assert registry.replica_mark() == (b"m1", g1)
    assert registry.current("f").version == 2 and check_integrity(registry) == []
    # The source pruned v1 and moved on; the shared blob stays for g.
    g2 = registry.apply_replica({"f": _state("f", 3, [(2, b), (3, a)])}, {}, b"m2")
    assert g2 == g1 + 1 and [v.version for v in registry.versions("f")] == [2, 3]
    assert registry.has_blob(sha256_hex(a)) and check_integrity(registry) == []
    registry.apply_replica({"f": None, "g": None}, {}, b"m3")
    assert registry.snapshot()[1] == {} and not registry.has_blob(sha256_hex(a)) and check_integrity(registry) == []
    registry.deploy("local", a, M)  # another writer: the mark's generation no longer matches
    assert registry.replica_mark() == (b"m3", g2 + 1) and registry.generation() == g2 + 2


def test_apply_replica_refuses_what_does_not_hold_together(registry: Registry) -> None:
    a = wasm(1)
    with pytest.raises(RegistryError, match="missing or wrong"):
        registry.apply_replica({"f": _state("f", 1, [(1, a)])}, {}, b"m")
    with pytest.raises(RegistryError, match="missing or wrong"):
        registry.apply_replica({"f": _state("f", 1, [(1, a)])}, {sha256_hex(a): a + b"!"}, b"m")
    with pytest.raises(RegistryError, match="inconsistent"):
        registry.apply_replica({"f": _state("f", 2, [(1, a)])}, {sha256_hex(a): a}, b"m")
    assert registry.generation() == 0 and registry.replica_mark() is None


# --- the replicator ---


def replicator(dsn: str, registry: Registry, tmp_path: Path) -> Replicator:
    return Replicator(dsn=dsn, node="n1", registry=registry, data_dir=tmp_path / "data")


def test_catch_up_incrementally_and_fully(
    dsn: str, conn: psycopg.Connection, registry: Registry, tmp_path: Path
) -> None:
    rep = replicator(dsn, registry, tmp_path)
    with connect(dsn) as work:
        assert rep.catch_up(work)  # an empty cluster: still recorded
        for i in range(3):
            deploy(conn, f"f{i}", i)
        deploy(conn, "f0", 10)
        assert rep.catch_up(work)
        same_as_cluster(conn, registry)
        assert msgspec.json.decode(registry.replica_mark()[0], type=Mark).g == 4
        assert not rep.catch_up(work)  # nothing new
        store.set_current(conn, "f0", 1)
        store.delete(conn, "f1")
        assert rep.catch_up(work)
        same_as_cluster(conn, registry)
        # A write that did not come from the cluster: the next catch-up copies everything, and what the
        # cluster does not have goes.
        registry.deploy("stray", wasm(99), M)
        deploy(conn, "f2", 20)
        assert rep.catch_up(work)
        same_as_cluster(conn, registry)
        state = read_state(tmp_path / "data")
        assert state is not None and state.caught_up and state.generation == store.head(conn).generation


def test_catch_up_from_another_cluster_copies_everything(
    dsn: str, postgres: PgServer, conn: psycopg.Connection, registry: Registry, tmp_path: Path
) -> None:
    deploy(conn, "f", 1)
    with connect(dsn) as work:
        replicator(dsn, registry, tmp_path).catch_up(work)
    other = postgres.new_database("other")
    with connect(other) as c2:
        store.create_schema(c2)
        deploy(c2, "g", 2)
        replicator(other, registry, tmp_path).catch_up(c2)
        same_as_cluster(c2, registry)
        assert "f" not in registry.snapshot()[1]


def test_replicator_converges_after_its_listen_connection_is_killed(
    dsn: str, conn: psycopg.Connection, registry: Registry, tmp_path: Path
) -> None:
    stop = threading.Event()
    seat = Seat(tmp_path / "data", lambda: replicator(dsn, registry, tmp_path))
    rival = Seat(tmp_path / "data", lambda: replicator(dsn, registry, tmp_path))
    seat.start()
    poll("the seat to replicate", lambda: seat.holding)
    rival.start()
    try:
        deploy(conn, "f", 1)
        poll("the replica to load v1", lambda: registry.current("f") is not None)
        killed = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'edge-hive-listen n1'"
        ).fetchall()
        assert killed == [(True,)]
        deploy(conn, "f", 2)
        poll("the replica to load v2", lambda: registry.current("f").version == 2)
        same_as_cluster(conn, registry)
        assert not rival.holding  # one replicator per node
        assert conn.execute("SELECT generation FROM hive_nodes WHERE name = 'n1'").fetchone() == (2,)
    finally:
        stop.set()
        seat.stop()
    poll("the rival to take over", lambda: rival.holding)
    rival.stop()


def test_guard_cuts_a_connection_whose_server_stalls(postgres: PgServer, dsn: str) -> None:
    from hive.cluster.pg import guard
    from tests.cluster.proxy import StallingProxy

    proxy = StallingProxy(postgres.port)
    try:
        with connect(dsn.replace(f"port={postgres.port}", f"port={proxy.port}")) as c:
            c.execute("SELECT 1")
            with guard(c, 5):
                c.execute("SELECT 1")  # in time: untouched
            proxy.stall()
            with pytest.raises(psycopg.OperationalError), guard(c, 0.3):
                c.execute("SELECT 1")  # would wait forever: the server never answers
            assert c.broken
    finally:
        proxy.close()
