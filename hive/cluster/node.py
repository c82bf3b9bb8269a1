"""A worker's side of cluster mode (the composition root, hive.service, holds one per worker).

Changes go to PostgreSQL (hive.cluster.store), one transaction each, then wait until every node
holding a lease serves the change's generation: the wait for a node ends when it has loaded the change
or its lease has run out (it has fenced then, or fences within its peer-check interval:
hive.cluster.lease), bounded by cluster_wait_ms for nodes that keep renewing. The node's replicator
(hive.cluster.replicator) runs in whichever worker holds the seat. PostgreSQL is never on the request
path: workers serve from the LMDB replica (unless fenced: one flag, kept by FenceWatch), and when
PostgreSQL is down changes fail fast with 503 registry_unavailable while serving goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import psycopg

from hive.cluster import store
from hive.cluster.lease import FenceWatch, Timing, ask_all, fenced, held, lease_info
from hive.cluster.pg import Pool, is_connection_error
from hive.cluster.ratelimit import SharedRateLimiter
from hive.cluster.replicator import NodeState, Replicator, Seat, read_state, server_identity
from hive.errors import RegistryError, RegistryUnavailable
from hive.kv.postgres import PgKv
from hive.manifest import Manifest
from hive.registry import Registry, VersionRecord
from hive.sandbox import Sandbox
from hive.settings import Settings

log = logging.getLogger("hive.cluster")

BOOT_WAIT_S = 15.0  # a booting worker waits this long for the node's catch-up, then serves its last state
_POLL_S = 0.005
_PROBE_S = 0.1  # how often a change asks the nodes past their lease whether they still serve
CHANGE_TIMEOUT_S = 30.0  # one change's PostgreSQL calls at most (a 50 MiB module included)
MIN_LEASE_MS = 1000  # below this, renewals every lease / 5 would come too close to PostgreSQL's round trips
T = TypeVar("T")


def node_name(settings: Settings) -> str:
    """cluster_node_name, or the host name and port: unique as long as nodes on one host use other ports."""
    return settings.cluster_node_name or f"{socket.gethostname()}:{settings.bind.rpartition(':')[2]}"


def node_url(settings: Settings) -> str:
    """cluster_node_url, or http://<bind> (a wildcard address replaced by the host name): where peers
    reach this node's /readyz."""
    if settings.cluster_node_url:
        return settings.cluster_node_url.rstrip("/")
    host, _, port = settings.bind.rpartition(":")
    if host in ("", "0.0.0.0", "::", "[::]"):
        host = socket.gethostname()
    return f"http://{host}:{port}"


class ClusterNode:
    def __init__(self, settings: Settings, registry: Registry, sandbox: Sandbox | None = None) -> None:
        self.settings = settings
        self.name = node_name(settings)
        self.data_dir = settings.data_path
        self.wait_s = settings.cluster_wait_ms / 1000
        if settings.cluster_lease_ms < MIN_LEASE_MS:
            log.warning(
                "cluster_lease_ms %d is below %d: using %d", settings.cluster_lease_ms, MIN_LEASE_MS, MIN_LEASE_MS
            )
        self.timing = Timing(max(MIN_LEASE_MS, settings.cluster_lease_ms) / 1000)
        self.url = node_url(settings)
        self.keep_versions = settings.keep_versions
        # Pinged before each use: a change must not fail on a connection PostgreSQL closed meanwhile.
        self.pool = Pool(settings.cluster_dsn, size=2, application_name=f"edge-hive-admin {self.name}", check_idle_s=0)
        self._schema = False
        self._watch: FenceWatch | None = None
        self.seat = Seat(
            self.data_dir,
            lambda: Replicator(
                dsn=settings.cluster_dsn,
                node=self.name,
                registry=registry,
                data_dir=self.data_dir,
                bind=settings.bind,
                url=self.url,
                lease_s=self.timing.lease_s,
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
            "node %s has not caught up with the cluster after %.0f s: serving its last state unless fenced, not ready",
            self.name,
            boot_wait_s,
        )
        return False

    def close(self) -> None:
        if self._watch is not None:
            self._watch.stop()
        self.seat.stop(timeout_s=10)  # before the registry closes: the replicator writes to it
        self.pool.close()

    def watch_fence(self, target: Any) -> None:
        """Keep `target.fenced` (the invoke path's one test) up to date, off the request path."""
        self._watch = FenceWatch(
            lambda: read_state(self.data_dir), self.timing, target, lambda s: s.server == server_identity()
        )
        self._watch.start()

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
        """The worker's readiness: not ready until a catch-up of this server run has completed, nor while
        fenced. Public (peers read `connected` and `lease.renewed_at` here: hive.cluster.lease)."""
        state = read_state(self.data_dir)
        current: NodeState | None = state if state is not None and state.server == server_identity() else None
        caught_up = current is not None and current.caught_up
        now = time.monotonic()
        is_fenced = current is None or fenced(current, self.timing, now)
        if self._watch is not None:  # the invoke path's flag agrees with what this answer says
            self._watch.apply(state, now)
        cluster: dict[str, Any] = {"node": self.name, "caught_up": caught_up, "fenced": is_fenced}
        if current is not None:
            cluster.update(
                generation=current.generation,
                loaded=current.loaded,
                cluster_generation=current.cluster_generation,
                # Connected means renewing: a replicator whose calls hang says so once its lease lapses.
                connected=current.connected and held(current, self.timing, now),
                live_nodes=current.live_nodes,
                lease=lease_info(current, self.timing, now),
            )
            if current.verdict and not held(current, self.timing, now):
                cluster["peers"] = {
                    "verdict": current.verdict,
                    "age_ms": round((now - current.verdict_at) * 1000),
                    "detail": current.verdict_detail,
                }
        return ok and caught_up and not is_fenced, {**detail, "cluster": cluster}

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
            return gone, {"generation": head.generation, "nodes_behind": 0, "behind": [], "behind_state": {}}
        return gone, await self.live_everywhere(gen)

    async def live_everywhere(self, generation: int) -> dict[str, Any]:
        """Wait until every node holding a lease serves `generation`, this one included. The wait for a
        node ends when it has loaded it or when its lease has run out and it has fenced (or does not
        answer). A node that keeps renewing without loading it is waited for cluster_wait_ms, and past
        that only until the lease it held then runs out; one past its lease that still answers unfenced
        (it served on while PostgreSQL was down for everyone, and is reconnecting) for unfenced_wait_s."""
        deadline = time.monotonic() + self.wait_s
        seen: dict[str, _Lease] = {}  # every node that held a lease at some poll (or answered past it)
        health: dict[str, str] = {}  # a node past its lease, as its /readyz last said: fenced, down, expired
        unfenced_since: dict[str, float] = {}
        next_probe = 0.0
        while True:
            try:
                rows = await self._call(_leases)
            except RegistryError as e:  # the change is committed; only the wait is cut short
                log.warning("could not follow generation %d to the nodes: %s", generation, e.message)
                break
            now = time.monotonic()
            waiting = False
            lapsed = {}
            for name, row in rows.items():
                if name in seen or row.held:
                    seen[name] = row
                if row.generation >= generation:
                    continue
                if row.held:  # past the deadline a node that renewed since is slow, not cut off
                    waiting = waiting or now < deadline or row.age_s > now - deadline
                elif row.url and name != self.name:
                    lapsed[name] = row
            if lapsed and (now >= next_probe or not lapsed.keys() <= health.keys()):  # may they still serve?
                answers = await asyncio.to_thread(ask_all, [r.url for r in lapsed.values()], self.timing.peer_timeout_s)
                next_probe = time.monotonic() + _PROBE_S
                for name, row in lapsed.items():
                    health[name] = _lease_health(answers.get(row.url))
                    if health[name] != "down":
                        seen[name] = row
            for name in lapsed:
                if health.get(name) == "expired":
                    since = unfenced_since.setdefault(name, now)
                    waiting = waiting or now - since < self.timing.unfenced_wait_s
            mine = rows.get(self.name)
            if (mine is None or mine.generation < generation) and now < deadline:
                waiting = True  # this node itself: until the deadline whatever its lease says
            if not waiting:
                break
            await asyncio.sleep(_POLL_S)
        behind = {
            name: "slow" if row.held else health.get(name, "down")
            for name, row in seen.items()
            if row.generation < generation
        }
        if self.name not in seen or seen[self.name].generation < generation:
            behind[self.name] = "slow"
        if behind:
            log.warning(
                "generation %d not loaded by %s",
                generation,
                ", ".join(f"{name} ({how})" for name, how in sorted(behind.items())),
            )
        return {
            "generation": generation,
            "nodes": len({*seen, self.name}),
            "nodes_behind": len(behind),
            "behind": sorted(behind),
            "behind_state": dict(sorted(behind.items())),
        }

    def status(self) -> dict[str, Any]:
        with self._conn() as conn:
            head = store.head(conn)
            rows = conn.execute(
                "SELECT name, generation, applied, extract(epoch from now() - heartbeat_at)::float8, stopped, bind, "
                "pid, workers, workers_behind, extract(epoch from started_at)::float8, lease_ms, url "
                "FROM hive_nodes ORDER BY name"
            ).fetchall()
        lapsed = [r[11] for r in rows if not r[4] and r[3] * 1000 >= r[10] and r[11]]
        answers = ask_all(lapsed, self.timing.peer_timeout_s)  # a lapsed lease: fenced, or down?
        nodes = []
        for name, gen, applied, age, stopped, bind, pid, workers, workers_behind, started, lease_ms, url in rows:
            lease_held = age * 1000 < lease_ms
            health = (
                "stopped"
                if stopped
                else _lease_health(answers.get(url))
                if not lease_held
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
                    "lease": {"ms": lease_ms, "held": lease_held and not stopped, "age_ms": round(age * 1000)},
                    "bind": bind,
                    "url": url,
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


class _Lease(NamedTuple):
    """A node's row as a writer sees it: the generation it serves and its lease on PostgreSQL's clock."""

    generation: int
    age_s: float
    lease_s: float
    url: str

    @property
    def held(self) -> bool:
        return self.age_s < self.lease_s


def _leases(conn: psycopg.Connection) -> dict[str, _Lease]:
    rows = conn.execute(
        "SELECT name, generation, extract(epoch from now() - heartbeat_at)::float8, lease_ms, url "
        "FROM hive_nodes WHERE NOT stopped"
    )
    return {name: _Lease(gen, age, ms / 1000, url) for name, gen, age, ms, url in rows}


def _lease_health(answer: dict[str, Any] | None) -> str:
    """A node whose lease ran out: `fenced` when its /readyz says so, `down` when it does not answer,
    `expired` when it answers unfenced (it fences within its peer-check interval if it can reach a
    connected peer, or serves on when it finds PostgreSQL down for everyone)."""
    if answer is None:
        return "down"
    cluster = answer.get("cluster")
    return "fenced" if isinstance(cluster, dict) and cluster.get("fenced") is True else "expired"


def _precompiler(sandbox: Sandbox) -> Callable[[VersionRecord, bytes], None]:
    def precompile(rec: VersionRecord, wasm: bytes) -> None:
        m = rec.manifest
        if m.kind == "js":  # bytecode for the shared JS engine (hive/js/server.py): nothing to compile
            return
        sandbox.compile(wasm, rec.sha256, m.allowed_wasi_imports(), m.limits.fuel is not None)

    return precompile
