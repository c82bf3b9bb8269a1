"""The registry's source of truth in cluster mode: PostgreSQL tables with the same rules as hive.registry.

Tables (created on first use, under an advisory lock):
  hive_cluster    one row: the cluster's id, the generation, the oldest generation still in hive_changes
  hive_functions  name -> current, latest, created_at
  hive_versions   (name, version) -> sha256, size, deployed_at, manifest (JSON, exactly as encoded)
  hive_blobs      sha256 -> module bytes, stored once, with the count of versions that use them
  hive_secrets    name -> value: the server-wide secrets (hive.registry's, for every node)
  hive_changes    generation -> op, name, version: what each change touched, for replicas catching up
  hive_nodes      name -> the generation its workers serve, heartbeat (its lease), url, ... (hive.cluster.lease)

A deploy, rollback or delete is one transaction: it bumps the generation first (the row lock makes
changes take turns across the cluster), writes, logs the change and NOTIFYs `hive_registry` with
{"g": generation, "op", "fn", "v"} (never module bytes: NOTIFY payloads stop at 8000 bytes). The
notification goes out at commit, so a listener never hears of a change it cannot read.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable

import msgspec
import psycopg

from hive.errors import FunctionNotFound, NoPreviousVersion, NotFound
from hive.manifest import Manifest
from hive.registry import FunctionRecord, FunctionState, VersionRecord

CHANNEL = "hive_registry"
LOG_KEEP = 10_000  # changes kept for replicas; one further behind copies every function instead
_SCHEMA_LOCK = 0x68697665_7267  # pg_advisory_xact_lock key for creating the tables
SCHEMA = """
CREATE TABLE IF NOT EXISTS hive_cluster (
    one boolean PRIMARY KEY DEFAULT true CHECK (one),
    id text NOT NULL,
    generation bigint NOT NULL DEFAULT 0,
    log_from bigint NOT NULL DEFAULT 1);
CREATE TABLE IF NOT EXISTS hive_functions (
    name text COLLATE "C" PRIMARY KEY,
    current integer NOT NULL,
    latest integer NOT NULL,
    created_at double precision NOT NULL);
CREATE TABLE IF NOT EXISTS hive_blobs (
    sha256 text PRIMARY KEY,
    size bigint NOT NULL,
    refs integer NOT NULL,
    data bytea NOT NULL);
CREATE TABLE IF NOT EXISTS hive_versions (
    name text COLLATE "C" NOT NULL,
    version integer NOT NULL,
    sha256 text NOT NULL REFERENCES hive_blobs,
    size bigint NOT NULL,
    deployed_at double precision NOT NULL,
    manifest json NOT NULL,
    PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS hive_secrets (
    name text COLLATE "C" PRIMARY KEY,
    value text NOT NULL);
CREATE TABLE IF NOT EXISTS hive_changes (
    generation bigint PRIMARY KEY,
    op text NOT NULL,
    name text NOT NULL,
    version integer,
    at timestamptz NOT NULL DEFAULT now());
CREATE TABLE IF NOT EXISTS hive_nodes (
    name text COLLATE "C" PRIMARY KEY,
    generation bigint NOT NULL DEFAULT -1,
    applied bigint NOT NULL DEFAULT -1,
    heartbeat_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz NOT NULL DEFAULT now(),
    stopped boolean NOT NULL DEFAULT false,
    bind text NOT NULL DEFAULT '',
    pid integer NOT NULL DEFAULT 0,
    workers integer NOT NULL DEFAULT 0,
    workers_behind integer NOT NULL DEFAULT 0,
    url text NOT NULL DEFAULT '',
    lease_ms integer NOT NULL DEFAULT 5000);
"""
# Columns added since the first release: a table created by it gets them (only then: ALTER locks it).
ADDED_COLUMNS = {"url": "text NOT NULL DEFAULT ''", "lease_ms": "integer NOT NULL DEFAULT 5000"}


def create_schema(conn: psycopg.Connection) -> None:
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        conn.execute(SCHEMA)
        have = {
            r[0]
            for r in conn.execute(
                "SELECT attname FROM pg_attribute WHERE attrelid = 'hive_nodes'::regclass AND NOT attisdropped"
            )
        }
        for column, decl in ADDED_COLUMNS.items():
            if column not in have:
                conn.execute(f"ALTER TABLE hive_nodes ADD COLUMN IF NOT EXISTS {column} {decl}")
        conn.execute("INSERT INTO hive_cluster (id) VALUES (%s) ON CONFLICT DO NOTHING", (uuid.uuid4().hex,))


_enc_manifest = msgspec.json.Encoder()
_dec_manifest = msgspec.json.Decoder(Manifest)


def _version(name: str, version: int, sha: str, size: int, deployed_at: float, manifest: str) -> VersionRecord:
    return VersionRecord(name, version, sha, size, deployed_at, _dec_manifest.decode(manifest))


class Change(msgspec.Struct):
    """What one transaction did, as NOTIFY carries it."""

    g: int
    op: str
    fn: str
    v: int | None = None


def parse_notice(payload: str) -> Change | None:
    try:
        return msgspec.json.decode(payload, type=Change)
    except msgspec.DecodeError:
        return None  # not ours: someone else NOTIFYing on the channel


# --- changes: each one transaction ---


def _begin_change(conn: psycopg.Connection) -> int:
    """The change's generation; the row lock serializes changes until commit."""
    row = conn.execute("UPDATE hive_cluster SET generation = generation + 1 RETURNING generation").fetchone()
    assert row is not None, "hive_cluster has its row from create_schema"
    return row[0]


def _end_change(conn: psycopg.Connection, change: Change) -> None:
    conn.execute(
        "INSERT INTO hive_changes (generation, op, name, version) VALUES (%s, %s, %s, %s)",
        (change.g, change.op, change.fn, change.v),
    )
    if change.g % 100 == 0:  # keep the log bounded, cheaply
        keep_from = change.g - LOG_KEEP + 1
        conn.execute("DELETE FROM hive_changes WHERE generation < %s", (keep_from,))
        conn.execute("UPDATE hive_cluster SET log_from = greatest(log_from, %s)", (keep_from,))
    payload = msgspec.json.encode(change).decode()
    assert len(payload) < 8000  # a name is at most 63 characters
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload))


def _decref(conn: psycopg.Connection, shas: Iterable[str]) -> None:
    shas = list(shas)
    for sha in shas:
        conn.execute("UPDATE hive_blobs SET refs = refs - 1 WHERE sha256 = %s", (sha,))
    if shas:
        conn.execute("DELETE FROM hive_blobs WHERE sha256 = ANY(%s) AND refs <= 0", (shas,))


def deploy(
    conn: psycopg.Connection, name: str, wasm: bytes, manifest: Manifest, sha: str, keep_versions: int
) -> tuple[VersionRecord, int]:
    with conn.transaction():
        gen = _begin_change(conn)
        row = conn.execute("SELECT latest FROM hive_functions WHERE name = %s", (name,)).fetchone()
        now = time.time()
        latest = (row[0] if row else 0) + 1
        rec = VersionRecord(name, latest, sha, len(wasm), now, manifest)
        # The module's bytes travel only when the cluster does not hold them yet.
        if conn.execute("UPDATE hive_blobs SET refs = refs + 1 WHERE sha256 = %s", (sha,)).rowcount == 0:
            conn.execute(
                "INSERT INTO hive_blobs (sha256, size, refs, data) VALUES (%s, %s, 1, %b)", (sha, len(wasm), wasm)
            )
        conn.execute(
            "INSERT INTO hive_functions (name, current, latest, created_at) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET current = EXCLUDED.current, latest = EXCLUDED.latest",
            (name, latest, latest, now),
        )
        conn.execute(
            "INSERT INTO hive_versions (name, version, sha256, size, deployed_at, manifest) "
            "VALUES (%s, %s, %s, %s, %s, %s)",
            (name, latest, sha, len(wasm), now, _enc_manifest.encode(manifest).decode()),
        )
        pruned = conn.execute(
            "DELETE FROM hive_versions WHERE name = %s AND version < %s RETURNING sha256",
            (name, latest - max(1, keep_versions) + 1),
        ).fetchall()
        _decref(conn, [r[0] for r in pruned])
        _end_change(conn, Change(gen, "deploy", name, latest))
    return rec, gen


def set_current(conn: psycopg.Connection, name: str, version: int | None) -> tuple[VersionRecord, int]:
    """Move the current pointer (as Registry.set_current: to `version`, or the newest kept one below)."""
    with conn.transaction():
        gen = _begin_change(conn)
        row = conn.execute("SELECT current FROM hive_functions WHERE name = %s", (name,)).fetchone()
        if row is None:
            raise FunctionNotFound(f"function {name!r} is not deployed")
        current = row[0]
        kept = [
            r[0] for r in conn.execute("SELECT version FROM hive_versions WHERE name = %s ORDER BY version", (name,))
        ]
        if version is None:
            older = [v for v in kept if v < current]
            if not older:
                raise NoPreviousVersion(f"function {name!r} has no kept version before v{current}")
            version = older[-1]
        if version not in kept:
            raise NotFound(f"function {name!r} has no version {version} (kept: {', '.join(map(str, kept))})")
        conn.execute("UPDATE hive_functions SET current = %s WHERE name = %s", (version, name))
        v = conn.execute(
            "SELECT sha256, size, deployed_at, manifest::text FROM hive_versions WHERE name = %s AND version = %s",
            (name, version),
        ).fetchone()
        assert v is not None, "a kept version, read in this transaction"
        _end_change(conn, Change(gen, "rollback", name, version))
    return _version(name, version, *v), gen


def delete(conn: psycopg.Connection, name: str) -> int:
    with conn.transaction():
        gen = _begin_change(conn)
        if conn.execute("DELETE FROM hive_functions WHERE name = %s", (name,)).rowcount == 0:
            raise FunctionNotFound(f"function {name!r} is not deployed")
        gone = conn.execute("DELETE FROM hive_versions WHERE name = %s RETURNING sha256", (name,)).fetchall()
        _decref(conn, [r[0] for r in gone])
        _end_change(conn, Change(gen, "delete", name))
    return gen


class _NoChange(Exception):
    pass


def set_secrets(conn: psycopg.Connection, values: dict[str, str]) -> int:
    with conn.transaction():
        gen = _begin_change(conn)
        for k, v in values.items():
            conn.execute(
                "INSERT INTO hive_secrets (name, value) VALUES (%s, %s) "
                "ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
                (k, v),
            )
        _end_change(conn, Change(gen, "secrets", ""))
    return gen


def unset_secrets(conn: psycopg.Connection, names: list[str]) -> tuple[list[str], int | None]:
    """The names that were set (and are now gone), and the change's generation (None: nothing was set)."""
    try:
        with conn.transaction():
            gen = _begin_change(conn)
            gone = [
                r[0] for r in conn.execute("DELETE FROM hive_secrets WHERE name = ANY(%s) RETURNING name", (names,))
            ]
            if not gone:
                raise _NoChange  # rolls the generation back: nothing changed
            _end_change(conn, Change(gen, "secrets", ""))
    except _NoChange:
        return [], None
    return sorted(gone), gen


# --- reads for replicas: inside one REPEATABLE READ transaction, so they agree with one generation ---


class Head(msgspec.Struct):
    id: str
    generation: int
    log_from: int


def begin_snapshot(conn: psycopg.Connection) -> Head:
    """Call first inside `with conn.transaction()`: every later read sees the same state."""
    conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    row = conn.execute("SELECT id, generation, log_from FROM hive_cluster").fetchone()
    assert row is not None
    return Head(*row)


def head(conn: psycopg.Connection) -> Head:
    row = conn.execute("SELECT id, generation, log_from FROM hive_cluster").fetchone()
    assert row is not None
    return Head(*row)


def changed_since(conn: psycopg.Connection, generation: int) -> tuple[list[str], bool]:
    """The functions changed after `generation`, and whether the secrets were."""
    rows = conn.execute(
        "SELECT DISTINCT op = 'secrets', name FROM hive_changes WHERE generation > %s ORDER BY 2", (generation,)
    ).fetchall()
    return [name for is_secrets, name in rows if not is_secrets], any(is_secrets for is_secrets, _ in rows)


def secrets(conn: psycopg.Connection) -> dict[str, str]:
    return {r[0]: r[1] for r in conn.execute("SELECT name, value FROM hive_secrets ORDER BY name")}


def function_names(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM hive_functions ORDER BY name")]


def states(conn: psycopg.Connection, names: list[str]) -> dict[str, FunctionState | None]:
    """Each function as it is now (None: not deployed)."""
    out: dict[str, FunctionState | None] = dict.fromkeys(names)
    fns = {
        r[0]: FunctionRecord(*r)
        for r in conn.execute(
            "SELECT name, current, latest, created_at FROM hive_functions WHERE name = ANY(%s)", (names,)
        )
    }
    versions: dict[str, list[VersionRecord]] = {}
    for r in conn.execute(
        "SELECT name, version, sha256, size, deployed_at, manifest::text FROM hive_versions "
        "WHERE name = ANY(%s) ORDER BY name, version",
        (names,),
    ):
        versions.setdefault(r[0], []).append(_version(*r))
    for name, fn in fns.items():
        out[name] = FunctionState(fn, versions.get(name, []))
    return out


def blobs(conn: psycopg.Connection, shas: list[str]) -> dict[str, bytes]:
    rows = conn.execute("SELECT sha256, data FROM hive_blobs WHERE sha256 = ANY(%s)", (shas,), binary=True)
    return {r[0]: bytes(r[1]) for r in rows}


def blob_sizes(conn: psycopg.Connection, shas: list[str]) -> dict[str, int]:
    return {r[0]: r[1] for r in conn.execute("SELECT sha256, size FROM hive_blobs WHERE sha256 = ANY(%s)", (shas,))}
