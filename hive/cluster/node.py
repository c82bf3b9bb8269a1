"""A worker's side of cluster mode (the composition root, hive.service, holds one per worker).

Changes go to PostgreSQL (hive.cluster.store), one transaction each, then wait (bounded by
cluster_wait_ms) until every live node reports that its workers serve the change's generation. The
node's replicator (hive.cluster.replicator) runs in whichever worker holds the seat. PostgreSQL is
never on the request path: workers serve from the LMDB replica, and when PostgreSQL is down changes
fail fast with 503 registry_unavailable while serving goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from hive.cluster import store
from hive.cluster.pg import Pool, is_connection_error
from hive.cluster.ratelimit import SharedRateLimiter
from hive.cluster.replicator import NODE_TIMEOUT_S, Replicator, Seat, read_state, server_identity
from hive.errors import RegistryError, RegistryUnavailable
from hive.kv.postgres import PgKv
from hive.manifest import Manifest
from hive.registry import Registry, VersionRecord
from hive.sandbox import Sandbox
from hive.settings import Settings

log = logging.getLogger("hive.cluster")

BOOT_WAIT_S = 15.0  # a booting worker waits this long for the node's catch-up, then serves its last state
_POLL_S = 0.005
CHANGE_TIMEOUT_S = 30.0  # one change's PostgreSQL calls at most (a 50 MiB module included)
T = TypeVar("T")


def node_name(settings: Settings) -> str:
    """cluster_node_name, or the host name and port: unique as long as nodes on one host use other ports."""
    return settings.cluster_node_name or f"{socket.gethostname()}:{settings.bind.rpartition(':')[2]}"


class ClusterNode:
    def __init__(self, settings: Settings, registry: Registry, sandbox: Sandbox | None = None) -> None:
        self.settings = settings
        self.name = node_name(settings)
        self.data_dir = settings.data_path
        self.wait_s = settings.cluster_wait_ms / 1000
        self.keep_versions = settings.keep_versions
        # Pinged before each use: a change must not fail on a connection PostgreSQL closed meanwhile.
        self.pool = Pool(settings.cluster_dsn, size=2, application_name=f"edge-hive-admin {self.name}", check_idle_s=0)
        self._schema = False
        self.seat = Seat(
            self.data_dir,
            lambda: Replicator(
                dsn=settings.cluster_dsn,
                node=self.name,
                registry=registry,
                data_dir=self.data_dir,
                bind=settings.bind,
                sync_wait_s=settings.sync_wait_ms / 1000,
                precompile=None if sandbox is None else _precompiler(sandbox),
            ),
        )

    def start(self, boot_wait_s: float = BOOT_WAIT_S) -> bool:
        """Start this worker's seat, and wait (bounded) until the node has caught up with the cluster."""
        self.seat.start()
        deadline = time.monotonic() + boot_wait_s
        while time.monotonic() < deadline:
            if self.caught_up():
                return True
            time.sleep(0.01)
        log.warning(
            "node %s has not caught up with the cluster after %.0f s: serving its last state, not ready until it has",
            self.name,
            boot_wait_s,
        )
        return False

    def close(self) -> None:
        self.seat.stop(timeout_s=10)  # before the registry closes: the replicator writes to it
        self.pool.close()

    # What the worker uses instead of its single-node parts

    def kv(self) -> PgKv:
        """The KV stores, shared by every node."""
        return PgKv(
            self.settings.cluster_dsn,
            quota_bytes=self.settings.kv_quota_mb << 20,
            application_name=f"edge-hive-kv {self.name}",
        )

    def rate_limiter(self, path: Path) -> SharedRateLimiter:
        """This node's buckets, with its share of each limit (hive.cluster.ratelimit)."""
        return SharedRateLimiter(path, self.data_dir)

    # Readiness and shares

    def caught_up(self) -> bool:
        state = read_state(self.data_dir)
        return state is not None and state.caught_up and state.server == server_identity()

    def readiness(self, ok: bool, detail: dict[str, Any]) -> tuple[bool, dict[str, Any]]:
        """The worker's readiness, and not ready until a catch-up of this server run has completed."""
        state = read_state(self.data_dir)
        current = state is not None and state.server == server_identity()
        caught_up = current and state is not None and state.caught_up
        cluster: dict[str, Any] = {"node": self.name, "caught_up": caught_up}
        if current and state is not None:
            cluster.update(
                generation=state.generation,
                loaded=state.loaded,
                cluster_generation=state.cluster_generation,
                connected=state.connected,
                live_nodes=state.live_nodes,
            )
        return ok and caught_up, {**detail, "cluster": cluster}

    # Changes

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection]:
        try:
            with self.pool.connection(wait_s=self.wait_s, timeout_s=CHANGE_TIMEOUT_S) as conn:
                if not self._schema:
                    store.create_schema(conn)
                    self._schema = True
                yield conn
        except psycopg.Error as e:
            if is_connection_error(e):
                raise RegistryUnavailable(
                    f"the cluster registry (PostgreSQL) is unreachable: {str(e).strip()[:200]}. Every node keeps "
                    "serving its last state; retry the change when PostgreSQL is back"
                ) from None
            raise RegistryError(f"the cluster registry (PostgreSQL) failed: {str(e).strip()[:200]}") from e

    async def _call(self, fn: Callable[[psycopg.Connection], T]) -> T:
        def run() -> T:
            with self._conn() as conn:
                return fn(conn)

        return await asyncio.to_thread(run)

    # Each: one PostgreSQL transaction, then the wait for every live node (the answer's live part).

    async def deploy(
        self, name: str, wasm: bytes, manifest: Manifest, sha: str
    ) -> tuple[VersionRecord, dict[str, Any]]:
        rec, gen = await self._call(lambda c: store.deploy(c, name, wasm, manifest, sha, self.keep_versions))
        return rec, await self.live_everywhere(gen)

    async def rollback(self, name: str, version: int | None) -> tuple[VersionRecord, dict[str, Any]]:
        rec, gen = await self._call(lambda c: store.set_current(c, name, version))
        return rec, await self.live_everywhere(gen)

    async def delete(self, name: str) -> dict[str, Any]:
        return await self.live_everywhere(await self._call(lambda c: store.delete(c, name)))

    async def set_secrets(self, values: dict[str, str]) -> dict[str, Any]:
        return await self.live_everywhere(await self._call(lambda c: store.set_secrets(c, values)))

    async def unset_secrets(self, names: list[str]) -> tuple[list[str], dict[str, Any]]:
        gone, gen = await self._call(lambda c: store.unset_secrets(c, names))
        if gen is None:
            head = await self._call(store.head)
            return gone, {"generation": head.generation, "nodes_behind": 0, "behind": []}
        return gone, await self.live_everywhere(gen)

    async def live_everywhere(self, generation: int) -> dict[str, Any]:
        """Wait (bounded by cluster_wait_ms) until every live node serves `generation`, this one included."""
        deadline = time.monotonic() + self.wait_s
        nodes: list[str] = []
        behind: list[str] = [self.name]
        while True:
            try:
                live = await self._call(_live_nodes)
            except RegistryError as e:  # the change is committed; only the wait is cut short
                log.warning("could not follow generation %d to the nodes: %s", generation, e.message)
                break
            nodes = sorted(live)
            behind = sorted(n for n, g in live.items() if g < generation)
            if self.name not in live:
                behind = sorted({*behind, self.name})
            if not behind or time.monotonic() >= deadline:
                break
            await asyncio.sleep(_POLL_S)
        if behind:
            log.warning(
                "nodes %s had not loaded generation %d after %d ms", ", ".join(behind), generation, self.wait_s * 1000
            )
        return {"generation": generation, "nodes": len(nodes), "nodes_behind": len(behind), "behind": behind}

    def status(self) -> dict[str, Any]:
        with self._conn() as conn:
            head = store.head(conn)
            rows = conn.execute(
                "SELECT name, generation, applied, extract(epoch from now() - heartbeat_at)::float8, stopped, bind, "
                "pid, workers, workers_behind, extract(epoch from started_at)::float8 FROM hive_nodes ORDER BY name"
            ).fetchall()
        nodes = []
        for name, gen, applied, age, stopped, bind, pid, workers, workers_behind, started in rows:
            health = (
                "stopped"
                if stopped
                else "down"
                if age > NODE_TIMEOUT_S
                else "behind"
                if gen < head.generation
                else "ok"
            )
            nodes.append(
                {
                    "name": name,
                    "health": health,
                    "generation": gen,
                    "applied": applied,
                    "lag": max(0, head.generation - gen),
                    "heartbeat_age_s": round(age, 3),
                    "bind": bind,
                    "pid": pid,
                    "workers": workers,
                    "workers_behind": workers_behind,
                    "started_at": round(started, 3),
                }
            )
        return {
            "enabled": True,
            "cluster_id": head.id,
            "generation": head.generation,
            "node": self.name,
            "nodes": nodes,
        }


def _precompiler(sandbox: Sandbox) -> Callable[[VersionRecord, bytes], None]:
    def precompile(rec: VersionRecord, wasm: bytes) -> None:
        m = rec.manifest
        if m.kind == "js":  # bytecode for the shared JS engine (hive/js/server.py): nothing to compile
            return
        sandbox.compile(wasm, rec.sha256, m.allowed_wasi_imports(), m.limits.fuel is not None)

    return precompile


def _live_nodes(conn: psycopg.Connection) -> dict[str, int]:
    rows = conn.execute(
        "SELECT name, generation FROM hive_nodes WHERE NOT stopped AND "
        "heartbeat_at > now() - make_interval(secs => %s)",
        (NODE_TIMEOUT_S,),
    )
    return {name: gen for name, gen in rows}
