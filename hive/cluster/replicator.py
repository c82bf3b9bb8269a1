"""A node's replicator: keeps the node's LMDB registry a replica of the cluster's (PostgreSQL).

One per node. Every worker runs a `Seat`: a thread that waits for an exclusive lock on
`<data dir>/run/replicator.lock`; the worker that holds it replicates, and when it exits (even by
SIGKILL: the kernel drops the lock) another worker's seat takes over. The gunicorn master stays free of
LMDB, wasmtime and PostgreSQL.

The replicator LISTENs on the registry channel, then catches up from the last generation it applied
(so no change falls between), and after that on every notification that names a newer generation and
once a second regardless (a lost notification delays a change by a second at most). A catch-up reads,
in one REPEATABLE READ snapshot, which functions changed since the applied generation (hive_changes)
and their whole state, then the module blobs the replica lacks (immutable by sha256), and applies it
all to LMDB (Registry.apply_replica) with the cluster generation as the mark; every function is copied instead when the mark does not fit (another cluster, a registry
written by something else since, a log pruned past it, or a cluster behind the mark). After any
reconnect it catches up again before anything else. Changes are applied in generation order by
construction: each catch-up moves the replica from one snapshot to a later one.

Then it waits (bounded by sync_wait_ms) until the node's workers serve the new LMDB generation and
reports the cluster generation as the node's in hive_nodes, with a heartbeat once a second: a deploy
on any node waits for that report. It also writes `<data dir>/run/cluster-state.json`, which the node's
workers read for /readyz (not ready until a catch-up of this server run), for their share of
server-wide rate limits (the count of live nodes) and for the fence (hive.cluster.lease).

The heartbeat row is the node's lease. Two more threads of the replicating worker keep it: one renews
it on a connection of its own while the replicator is connected and caught up (a long catch-up does
not hold renewals back), one asks the peers' /readyz once the lease is overdue and publishes the
verdict (hive.cluster.lease says what follows from it).
"""

from __future__ import annotations

import fcntl
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path

import msgspec
import psutil
import psycopg

from hive.cluster import store
from hive.cluster.lease import FENCE, SERVE, Timing, check_peers
from hive.cluster.pg import connect, cut, guard
from hive.marks import start_ticks
from hive.peers import SyncMarks
from hive.registry import FunctionState, Registry, VersionRecord

log = logging.getLogger("hive.cluster")

HEARTBEAT_S = 1.0
# The nodes whose lease (heartbeat row) is fresh: a node's own lease_ms, as PostgreSQL's clock sees it.
LIVE_SQL = "NOT stopped AND heartbeat_at > now() - lease_ms * interval '1 millisecond'"
BATCH_BYTES = 64 << 20  # module bytes one LMDB transaction of a catch-up takes at most
# A PostgreSQL call that takes longer (a stalled server or network) has its connection cut: reconnect.
QUERY_TIMEOUT_S = 10.0
STATE_FILE = "cluster-state.json"
LOCK_FILE = "replicator.lock"


class Mark(msgspec.Struct):
    """What the replica's LMDB registry copies: a cluster and its generation (-1: a copy in progress)."""

    id: str
    g: int


class Peer(msgspec.Struct, array_like=True):
    name: str
    url: str


class NodeState(msgspec.Struct):
    """The replicator's report to its node's workers (the state file)."""

    server: list[int]  # [gunicorn master pid, its start ticks]: which server run this is about
    node: str
    pid: int  # the worker that replicates
    caught_up: bool = False  # a catch-up of this server run has completed
    connected: bool = False
    generation: int = -1  # the cluster generation in the node's LMDB
    loaded: int = -1  # the cluster generation every worker of the node serves
    cluster_generation: int = -1  # the newest generation seen
    live_nodes: int = 1
    error: str = ""
    at: float = 0.0
    # The lease (hive.cluster.lease). Monotonic times are this host's clock, which every process shares.
    url: str = ""
    lease_ms: int = 5000
    renewed: float = 0.0  # monotonic: when the last successful renewal of this server run was SENT (0: none)
    renewed_at: float = 0.0  # PostgreSQL's clock (epoch) at that renewal; kept across server runs
    peers: list[Peer] = msgspec.field(default_factory=list)  # the others holding a lease at that renewal
    verdict: str = ""  # the last peer check: SERVE, FENCE or "" (none yet)
    verdict_at: float = 0.0  # monotonic: when that check began
    verdict_detail: str = ""


def server_identity() -> list[int]:
    ppid = os.getppid()
    return [ppid, start_ticks(ppid) or 0]


def _server_started() -> float:
    try:
        return psutil.Process(os.getppid()).create_time()
    except psutil.Error:
        return time.time()


def read_state(data_dir: Path) -> NodeState | None:
    try:
        return msgspec.json.decode((data_dir / "run" / STATE_FILE).read_bytes(), type=NodeState)
    except (OSError, msgspec.DecodeError):
        return None


def _write_state(data_dir: Path, state: NodeState) -> None:
    run = data_dir / "run"
    tmp = run / f".{STATE_FILE}.{os.getpid()}.tmp"  # one writer at a time per process (Replicator._lock)
    try:
        run.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(msgspec.json.encode(state))
        os.replace(tmp, run / STATE_FILE)  # readers never see half of it
    except OSError:
        log.warning("could not write %s", run / STATE_FILE, exc_info=True)


Precompile = Callable[[VersionRecord, bytes], None]


class Replicator:
    def __init__(
        self,
        *,
        dsn: str,
        node: str,
        registry: Registry,
        data_dir: Path,
        bind: str = "",
        url: str = "",
        lease_s: float = 5.0,
        sync_wait_s: float = 3.0,
        precompile: Precompile | None = None,
    ) -> None:
        self.dsn = dsn
        self.node = node
        self.registry = registry
        self.data_dir = data_dir
        self.bind = bind
        self.timing = Timing(lease_s)
        self.sync_wait_s = sync_wait_s
        self.precompile = precompile
        self.marks = SyncMarks(data_dir)
        self.state = NodeState(server_identity(), node, os.getpid(), url=url, lease_ms=round(lease_s * 1000))
        self._inherit(read_state(data_dir))
        self.local = -1  # the LMDB generation of the last apply
        self.catch_ups = 0
        self._started_at = _server_started()
        self._lock = threading.Lock()  # the state file is written by three threads
        self._wake = threading.Event()  # a peer reaches PostgreSQL: reconnect now, not after the backoff
        self._conns: list[psycopg.Connection] = []  # the session's, cut when this node is found cut off
        self._session_began = 0.0  # monotonic
        self._grace_until = 0.0  # monotonic: the end of a reconnect grace (see _check_loop), 0: none

    def _inherit(self, old: NodeState | None) -> None:
        """The lease is the node's, not the worker's: a successor in the same server run keeps it. A new
        server run keeps only what peers compare against (it renews before it serves, or fences)."""
        if old is None or old.node != self.node:
            return
        s = self.state
        s.renewed_at, s.peers = old.renewed_at, old.peers
        if old.server == s.server:  # and the replica is as caught up as its predecessor left it
            s.renewed, s.verdict, s.verdict_at, s.verdict_detail = (
                old.renewed,
                old.verdict,
                old.verdict_at,
                old.verdict_detail,
            )
            s.caught_up, s.generation, s.loaded, s.cluster_generation = (
                old.caught_up,
                old.generation,
                old.loaded,
                old.cluster_generation,
            )

    # The loop

    def run(self, stop: threading.Event) -> None:
        self._publish()  # this server run's state, inherited lease included, before anything can block
        done = threading.Event()
        keepers = [
            threading.Thread(target=self._renew_loop, args=(stop, done), name="hive-lease", daemon=True),
            threading.Thread(target=self._check_loop, args=(stop, done), name="hive-lease-check", daemon=True),
        ]
        for t in keepers:
            t.start()
        backoff = 0.1
        try:
            while not stop.is_set():
                try:
                    self._session(stop)
                    backoff = 0.1
                except Exception as e:  # PostgreSQL gone, or a failure applying: retry, keep serving LMDB
                    if not stop.is_set():
                        log.warning(
                            "cluster replication (node %s) interrupted: %s; retrying", self.node, str(e).strip()[:300]
                        )
                    self.state.connected = False
                    self.state.error = str(e).strip()[:300]
                    self._publish()
                    deadline = time.monotonic() + backoff
                    while not stop.is_set() and not self._wake.is_set() and time.monotonic() < deadline:
                        stop.wait(0.02)
                    backoff = 0.1 if self._wake.is_set() else min(2.0, backoff * 2)
                    self._wake.clear()
        finally:
            done.set()
            for t in keepers:
                t.join(5)
        self._goodbye()

    def _session(self, stop: threading.Event) -> None:
        try:
            self._connected_session(stop)
        finally:
            self._conns = []

    def _connected_session(self, stop: threading.Event) -> None:
        with (
            connect(self.dsn, application_name=f"edge-hive-listen {self.node}") as listen,
            connect(self.dsn, application_name=f"edge-hive-node {self.node}") as work,
        ):
            self._conns, self._session_began = [listen, work], time.monotonic()
            with guard(work, QUERY_TIMEOUT_S), guard(listen, QUERY_TIMEOUT_S):
                store.create_schema(work)
                listen.execute(f"LISTEN {store.CHANNEL}")
            self.catch_up(work)  # after LISTEN: a change committed from now on is also notified
            self.state.connected, self.state.error = True, ""
            self.heartbeat(work)
            next_beat = time.monotonic() + HEARTBEAT_S
            while not stop.is_set():
                wake = False
                for n in listen.notifies(timeout=0.25, stop_after=1):
                    change = store.parse_notice(n.payload)
                    wake = change is None or change.g > self.state.generation
                if wake:
                    for _ in listen.notifies(timeout=0):  # those that came meanwhile: one catch-up for all
                        pass
                    if self.catch_up(work):
                        self.heartbeat(work)  # at once: a deploy somewhere waits for this report
                if time.monotonic() >= next_beat:
                    self.catch_up(work)  # whatever a lost notification did not say
                    self.heartbeat(work)
                    next_beat = time.monotonic() + HEARTBEAT_S

    # Catching up

    def _position(self, head: store.Head) -> tuple[int, bool]:
        """(generation applied, whether every function must be copied)."""
        got = self.registry.replica_mark()
        if got is None:
            return -1, True
        raw, local = got
        try:
            mark = msgspec.json.decode(raw, type=Mark)
        except msgspec.DecodeError:
            return -1, True
        full = (
            mark.id != head.id
            or local != self.registry.generation()
            or mark.g < 0
            or mark.g > head.generation
            or mark.g < head.log_from - 1
        )
        return mark.g, full

    def catch_up(self, conn: psycopg.Connection) -> bool:
        """Bring the LMDB replica to the cluster's generation; whether anything changed."""
        started = time.monotonic()
        # What to apply, from one snapshot (small: no module bytes). Blobs are fetched after it, batch by
        # batch: they never change under a sha256, and one pruned meanwhile fails this catch-up, which
        # the next one redoes from a newer snapshot.
        with guard(conn, QUERY_TIMEOUT_S), conn.transaction():
            head = store.begin_snapshot(conn)
            applied, full = self._position(head)
            if not full and applied == head.generation:
                names: list[str] = []
            elif full:
                names = sorted(set(store.function_names(conn)) | set(self.registry.snapshot()[1]))
                secrets: dict[str, str] | None = store.secrets(conn)
            else:
                names, secrets_changed = store.changed_since(conn, applied)
                secrets = store.secrets(conn) if secrets_changed else None
            wanted = store.states(conn, names) if names else {}
        self.state.cluster_generation = head.generation
        if not full and applied == head.generation:
            if not self.state.caught_up or self.local < 0 or not self._held():
                self._caught_up(conn, head.generation, self.registry.generation())
            return False
        batches = self._batches(wanted)
        local = self.registry.generation()
        for i, batch in enumerate(batches):
            last = i == len(batches) - 1
            need = sorted(
                {v.sha256 for s in batch.values() if s for v in s.versions if not self.registry.has_blob(v.sha256)}
            )
            with guard(conn, QUERY_TIMEOUT_S):
                blobs = store.blobs(conn, need) if need else {}
            if len(blobs) < len(need):
                raise RuntimeError(f"{len(need) - len(blobs)} module blobs were pruned during the catch-up; retrying")
            self._precompile(batch, blobs)
            # Until the last batch the mark keeps the old position (-1 when copying everything), so a
            # crash in between repeats the catch-up.
            mark = Mark(head.id, head.generation if last else (-1 if full else applied))
            local = self.registry.apply_replica(batch, blobs, msgspec.json.encode(mark), secrets if last else None)
        self.catch_ups += 1
        log.info(
            "node %s: registry at cluster generation %d (%s%d functions, %.1f ms)",
            self.node,
            head.generation,
            "full copy, " if full else "",
            len(names),
            (time.monotonic() - started) * 1000,
        )
        self._caught_up(conn, head.generation, local)
        return True

    def _batches(self, wanted: dict[str, FunctionState | None]) -> list[dict[str, FunctionState | None]]:
        out: list[dict[str, FunctionState | None]] = [{}]
        size = 0
        for name, state in wanted.items():
            add = sum(v.size for v in state.versions) if state else 0
            if out[-1] and size + add > BATCH_BYTES:
                out.append({})
                size = 0
            out[-1][name] = state
            size += add
        return out

    def _precompile(self, batch: dict[str, FunctionState | None], blobs: dict[str, bytes]) -> None:
        """Compile each function's current version before the workers are told (they then only map it)."""
        if self.precompile is None:
            return
        for state in batch.values():
            if state is None:
                continue
            rec = next((v for v in state.versions if v.version == state.function.current), None)
            if rec is None:
                continue
            try:
                wasm = blobs.get(rec.sha256) or self.registry.blob(rec.sha256)
                self.precompile(rec, wasm)
            except Exception as e:  # the workers' own load reports it (readyz)
                log.warning("node %s: could not compile %s v%d: %s", self.node, rec.name, rec.version, e)

    def _caught_up(self, conn: psycopg.Connection, generation: int, local: int) -> None:
        self.local = local
        self.state.generation = generation
        self.state.caught_up = True
        if not self._held():  # a lapsed (or new) lease is renewed from a caught-up replica before anything
            with guard(conn, QUERY_TIMEOUT_S):
                self._report(conn, len(self.marks.live()), len(self.marks.lagging(local)))
        self._publish()  # the workers may serve (and booting ones warm) from here
        deadline = time.monotonic() + self.sync_wait_s
        while self.marks.lagging(local) and time.monotonic() < deadline:
            time.sleep(0.002)
        if not self.marks.lagging(local):
            self.state.loaded = generation
            self._publish()

    # Reporting

    def heartbeat(self, conn: psycopg.Connection) -> None:
        if self.state.loaded < self.state.generation and not self.marks.lagging(self.local):
            self.state.loaded = self.state.generation  # a slow worker has caught up since
        live = self.marks.live()
        behind = len(self.marks.lagging(self.local))
        with guard(conn, QUERY_TIMEOUT_S):
            self._report(conn, len(live), behind)
        self._publish()

    def _report(self, conn: psycopg.Connection, workers: int, behind: int) -> None:
        """The heartbeat: what the node serves, and a renewal of its lease."""
        sent = time.monotonic()
        row = conn.execute(
            "INSERT INTO hive_nodes (name, generation, applied, heartbeat_at, started_at, stopped, bind, pid, workers, "
            "workers_behind, url, lease_ms) "
            "VALUES (%s, %s, %s, now(), to_timestamp(%s), false, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (name) DO UPDATE SET generation = EXCLUDED.generation, applied = EXCLUDED.applied, "
            "heartbeat_at = now(), started_at = EXCLUDED.started_at, stopped = false, bind = EXCLUDED.bind, "
            "pid = EXCLUDED.pid, workers = EXCLUDED.workers, workers_behind = EXCLUDED.workers_behind, "
            "url = EXCLUDED.url, lease_ms = EXCLUDED.lease_ms RETURNING extract(epoch from now())::float8",
            (
                self.node,
                self.state.loaded,
                self.state.generation,
                self._started_at,
                self.bind,
                os.getpid(),
                workers,
                behind,
                self.state.url,
                self.state.lease_ms,
            ),
        ).fetchone()
        live = conn.execute(f"SELECT name, url FROM hive_nodes WHERE {LIVE_SQL} ORDER BY name").fetchall()
        self.state.live_nodes = max(1, len(live))
        self.state.peers = [Peer(name, url) for name, url in live if name != self.node and url]
        if row is not None:
            self._renewed(sent, row[0])

    # The lease (hive.cluster.lease)

    def _held(self) -> bool:
        return self.state.renewed > 0 and time.monotonic() - self.state.renewed < self.timing.own_s

    def _renewed(self, sent: float, at: float) -> None:
        with self._lock:
            if sent > self.state.renewed:
                self.state.renewed, self.state.renewed_at = sent, at

    def _renew(self, conn: psycopg.Connection) -> bool:
        sent = time.monotonic()
        with guard(conn, self.timing.lease_s / 2):
            row = conn.execute(
                "UPDATE hive_nodes SET heartbeat_at = now() WHERE name = %s AND pid = %s AND NOT stopped "
                "RETURNING extract(epoch from now())::float8",
                (self.node, os.getpid()),
            ).fetchone()
        if row is None:
            return False  # no row of this worker yet: the session's first report makes it
        self._renewed(sent, row[0])
        self._publish()
        return True

    def _renew_loop(self, stop: threading.Event, done: threading.Event) -> None:
        """Renew while the replicator is connected and caught up, even in the middle of a long catch-up."""
        beat = self.timing.beat_s
        conn: psycopg.Connection | None = None
        retry_at = 0.0
        try:
            while not stop.is_set() and not done.is_set():
                due = max(self.state.renewed + beat, retry_at)
                if self.state.connected and time.monotonic() >= due:
                    try:
                        if conn is None or conn.closed:
                            conn = connect(self.dsn, application_name=f"edge-hive-lease {self.node}")
                        self._renew(conn)
                    except psycopg.Error:
                        if conn is not None:
                            conn.close()
                        conn = None
                    retry_at = time.monotonic() + beat / 2  # after a failure (or no row yet): soon, not at once
                    continue
                stop.wait(max(0.01, min(0.1, due - time.monotonic())))
        finally:
            if conn is not None:
                conn.close()

    def _check_loop(self, stop: threading.Event, done: threading.Event) -> None:
        """Once the lease is overdue: ask the peers every check_s, publish the verdict."""
        t = self.timing
        started = time.monotonic()
        next_check = 0.0
        while not stop.is_set() and not done.is_set():
            now = time.monotonic()
            renewed = self.state.renewed
            since = renewed if renewed > 0 else started  # a new lease: as if renewed when this began
            if now - since < t.overdue_s:
                stop.wait(max(0.01, min(0.1, since + t.overdue_s - now)))
                continue
            if now < next_check:
                stop.wait(max(0.01, min(0.05, next_check - now)))
                continue
            next_check = now + t.check_s
            try:
                verdict = check_peers(self.node, self.state.renewed_at, [p.url for p in self.state.peers], t)
            except Exception:  # no fresh verdict then: the workers fence, the safe side
                log.exception("node %s: checking the peers failed", self.node)
                continue
            was = self.state.verdict
            serve, detail = verdict.serve, verdict.detail
            if verdict.connected and was == SERVE and not self._held():
                # Past its lease on a verdict that PostgreSQL was down for everyone, and now it is back:
                # reconnect first, fence only if that takes longer than the grace. A change meanwhile
                # waits for a node that answers unfenced (hive.cluster.node), so this serves nothing stale.
                if not self._grace_until:
                    self._grace_until = now + t.grace_s
                serve = now < self._grace_until
                if serve:
                    detail = f"{detail}; PostgreSQL is back: reconnecting first (for {t.grace_s:.1f} s at most)"
            else:
                self._grace_until = 0.0
            with self._lock:
                self.state.verdict = SERVE if serve else FENCE
                self.state.verdict_at, self.state.verdict_detail = now, detail
            self._publish()
            if self.state.verdict != was:
                log.warning(
                    "node %s has %s: %s",
                    self.node,
                    f"not renewed its lease for {now - renewed:.1f} s" if renewed > 0 else "no lease yet",
                    detail,
                )
            if verdict.connected:  # PostgreSQL is up: reconnect at once, not after the backoff
                if self._session_began < renewed:  # the session that was renewing then: stuck, cut it
                    for c in list(self._conns):  # (a newer one is catching up: left alone)
                        cut(c)
                self._wake.set()

    def _publish(self) -> None:
        with self._lock:
            self.state.at = time.time()
            _write_state(self.data_dir, self.state)

    def _goodbye(self) -> None:
        """This worker stops replicating: deploys need not wait for the node until a successor reports."""
        try:
            with connect(self.dsn, application_name=f"edge-hive-node {self.node}") as conn, guard(conn, 3):
                conn.execute(
                    "UPDATE hive_nodes SET stopped = true WHERE name = %s AND pid = %s", (self.node, os.getpid())
                )
        except psycopg.Error:
            pass  # PostgreSQL is down: the heartbeat simply stops


class Seat:
    """The node's one replicator: a thread in every worker, the one holding the lock file replicates."""

    poll_s = 0.2

    def __init__(self, data_dir: Path, make: Callable[[], Replicator]) -> None:
        self.lock_path = data_dir / "run" / LOCK_FILE
        self.make = make
        self.replicator: Replicator | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="hive-replicator", daemon=True)

    @property
    def holding(self) -> bool:
        return self.replicator is not None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            while not self._stop.is_set():
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    self._stop.wait(self.poll_s)
            if self._stop.is_set():
                return
            log.info("worker %d replicates the cluster registry for this node", os.getpid())
            self.replicator = self.make()
            self.replicator.run(self._stop)
        except Exception:
            log.exception("the replicator stopped")
        finally:
            os.close(fd)  # releases the lock: another worker's seat takes over
