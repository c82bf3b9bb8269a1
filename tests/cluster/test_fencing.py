"""Fencing on real processes (hive.cluster.lease): three nodes (`edge-hive serve`, two workers each) on
the session's PostgreSQL, node fa through a proxy that can stall its connections (kept open, no bytes
moved: only fa's own timeouts notice), with the default lease (cluster_lease_ms = 5000).

- fa partitioned: a delete, and in a second partition a rollback, made through another node answer;
  from then on fa answers 503 node_fenced, never the deleted or rolled-back version, and its /readyz
  is 503; once the partition ends it catches up and serves the current state by itself.
- fa restarted while cut off, after a change it missed: fenced, not serving what it had.
- PostgreSQL stopped: past the lease every node keeps serving (its peers say PostgreSQL is down for
  them too); when it returns, all recover.
- PostgreSQL returns while fa is still cut off: a change through another node answers only once fa
  has fenced.
- a cluster of one with PostgreSQL stopped keeps serving.

State is checked through the nodes' answers; waits are bounded polls for a condition. Each prints its
figures (`-s` shows them)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.cluster.cluster import (
    Load,
    Node,
    body_of,
    cluster_part,
    healthy,
    is_fenced,
    module,
    status,
    via,
)
from tests.cluster.pgserver import PgServer
from tests.cluster.proxy import StallingProxy
from tests.support import poll

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

LEASE_MS = 5000  # the default
NAMES = ["fa", "fb", "fc"]


@dataclass
class Trio:
    a: Node
    b: Node
    c: Node
    proxy: StallingProxy

    @property
    def nodes(self) -> list[Node]:
        return [self.a, self.b, self.c]


@pytest.fixture(scope="module")
def trio(postgres: PgServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trio]:
    dsn = postgres.new_database("fencing")
    root = tmp_path_factory.mktemp("fencing")
    proxy = StallingProxy(postgres.port)
    a = Node("fa", root / "fa" / "data", via(proxy.port, dsn, postgres.port))
    b = Node("fb", root / "fb" / "data", dsn)
    c = Node("fc", root / "fc" / "data", dsn)
    started: list[Node] = []
    try:
        for node in (a, b, c):
            node.start()
            started.append(node)
        poll("every node to know the others", lambda: all(cluster_part(n)["live_nodes"] == 3 for n in started))
        yield Trio(a, b, c, proxy)
    finally:
        for node in started:
            node.stop()
        proxy.close()


@dataclass
class Seen:
    sent: float
    status: int
    body: bytes
    fenced: bool


class Watch:
    """Invokes `fn` on `node` without pause (a new connection each time, so both workers answer) and
    records every answer with when it was sent."""

    def __init__(self, node: Node, fn: str) -> None:
        self.node, self.fn = node, fn
        self.seen: list[Seen] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Watch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            sent = time.monotonic()
            try:
                r = self.node.invoke(self.fn)
            except httpx.HTTPError:
                continue
            self.seen.append(Seen(sent, r.status_code, r.content, is_fenced(r)))
            self._stop.wait(0.01)


def serves(node: Node, fn: str, body: bytes | None, tries: int = 4) -> bool:
    """The node answers `body` (None: 404 function_not_found) on every one of `tries` new connections."""
    for _ in range(tries):
        r = node.invoke(fn)
        ok = r.status_code == 404 if body is None else (r.status_code, r.content) == (200, body)
        if not ok:
            return False
    return True


def partitioned_change(
    trio: Trio, fn: str, old: bytes, new: bytes | None, change: Callable[[], httpx.Response]
) -> dict[str, float]:
    """Partition fa, make `change` through another node, check fa refuses instead of serving `old`,
    end the partition, wait for fa to serve `new`. The figures, in ms."""
    a = trio.a
    others = [trio.b, trio.c]
    assert all(serves(n, fn, old) for n in trio.nodes)
    with Watch(a, fn) as watch:
        trio.proxy.stall()
        stalled = time.monotonic()
        r = change()
        answered = time.monotonic()
        assert r.status_code in (200, 201), r.text
        live = r.json()
        # fa held its lease when the change committed: the change waited for it until the lease ran out.
        assert (live["nodes"], live["nodes_behind"], live["behind"]) == (3, 1, ["fa"]), live
        assert live["behind_state"] == {"fa": "fenced"}, live
        for _ in range(6):  # both workers: fenced, never the version the registry no longer has
            got = a.invoke(fn)
            assert is_fenced(got), (got.status_code, got.text)
            assert "another node" in got.json()["message"]
        ready = httpx.get(a.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["cluster"]["fenced"] is True, ready.text
        assert ready.json()["cluster"]["connected"] is False and ready.json()["cluster"]["lease"]["held"] is False
        assert all(serves(n, fn, new) for n in others)
        seen_by_b = {n["name"]: n for n in status(trio.b)["nodes"]}["fa"]
        assert seen_by_b["health"] == "fenced" and seen_by_b["lease"]["held"] is False, seen_by_b
        trio.proxy.resume()
        resumed = time.monotonic()
        poll("fa to catch up and serve again", lambda: serves(a, fn, new, tries=2), timeout=60)
        caught_up = time.monotonic()
        poll("fa to be ready", lambda: httpx.get(a.url + "/readyz", timeout=10).status_code == 200, timeout=30)
    stale = [s for s in watch.seen if s.sent > answered and s.status == 200 and s.body == old]
    assert stale == [], stale[:5]
    fences = [s.sent for s in watch.seen if s.fenced]
    assert fences, "the watch never saw fa fenced"
    served_old_until = max((s.sent for s in watch.seen if s.status == 200 and s.body == old), default=stalled)
    poll("every node healthy", lambda: healthy(trio.b, NAMES), timeout=30)
    return {
        "fence": (min(fences) - stalled) * 1000,
        "answer": (answered - stalled) * 1000,
        "last_old": (served_old_until - stalled) * 1000,
        "catch_up": (caught_up - resumed) * 1000,
        "probes": len(watch.seen),
    }


def test_a_partitioned_node_fences_and_converges(trio: Trio) -> None:
    b, c = trio.b, trio.c
    r = b.deploy("gone", module("gone", 1))
    assert r.status_code == 201 and r.json()["nodes_behind"] == 0, r.text
    for build in (1, 2):
        r = c.deploy("moved", module("moved", build))
        assert r.status_code == 201 and r.json()["nodes_behind"] == 0, r.text

    deleted = partitioned_change(trio, "gone", body_of("gone", 1), None, lambda: b.admin("DELETE", "/api/v1/edge/gone"))
    rolled = partitioned_change(trio, "moved", body_of("moved", 2), body_of("moved", 1), lambda: c.rollback("moved"))
    for fn, body in (("gone", None), ("moved", body_of("moved", 1))):
        assert all(serves(n, fn, body) for n in trio.nodes)
    for what, f in (("delete", deleted), ("rollback", rolled)):
        print(
            f"\n[cluster figures] fa partitioned, {what} through another node: fa fenced {f['fence']:.0f} ms after "
            f"the partition (last served the old version at {f['last_old']:.0f} ms), the change answered at "
            f"{f['answer']:.0f} ms; fa caught up {f['catch_up']:.0f} ms after the partition ended "
            f"({f['probes']:.0f} probes of fa, none stale after the answer)",
            flush=True,
        )


def test_a_node_restarted_while_cut_off_fences_until_it_catches_up(trio: Trio) -> None:
    """It knows its peers from its last run: with them reaching PostgreSQL it refuses rather than serve
    the state it had when it stopped."""
    a, b = trio.a, trio.b
    r = b.deploy("back", module("back", 1))
    assert r.status_code == 201 and r.json()["nodes_behind"] == 0, r.text
    a.stop()
    r = b.deploy("back", module("back", 2))  # while fa is down: not waited for
    assert r.status_code == 201 and r.json()["behind"] == [], r.text
    trio.proxy.stall()
    server = a.launch()
    launched = time.monotonic()
    answers: list[httpx.Response] = []
    try:

        def answered() -> bool:
            assert server.proc.poll() is None, server.log()[-3000:]
            try:
                answers.append(a.invoke("back"))
            except httpx.HTTPError:
                return False  # its workers wait (15 s at most) for a catch-up that cannot come
            return len(answers) >= 4

        poll("fa to accept connections", answered, timeout=90, interval=0.05)
        accepted = time.monotonic()
        assert all(is_fenced(x) for x in answers), [(x.status_code, x.text[:100]) for x in answers]
        ready = httpx.get(a.url + "/readyz", timeout=10)
        assert ready.status_code == 503 and ready.json()["cluster"]["fenced"] is True, ready.text
    finally:
        trio.proxy.resume()
    resumed = time.monotonic()
    server.wait_ready(2, timeout=90)
    assert serves(a, "back", body_of("back", 2))
    print(
        f"\n[cluster figures] fa restarted while cut off: accepted connections {(accepted - launched) * 1000:.0f} ms "
        f"after launch, fenced ({len(answers)} answers, all node_fenced); ready "
        f"{(time.monotonic() - resumed) * 1000:.0f} ms after the partition ended",
        flush=True,
    )


def test_postgres_stopped_every_node_keeps_serving_past_the_lease(trio: Trio, postgres: PgServer) -> None:
    """Under load, through the outage and the way back: not one request fails (a node past its lease that
    sees a peer reconnected reconnects itself within its grace instead of fencing)."""
    nodes = trio.nodes
    r = trio.a.deploy("kept", module("kept", 1))
    assert r.status_code == 201 and r.json()["nodes_behind"] == 0, r.text
    kept = body_of("kept", 1)
    with Load(nodes, ["kept"], check=lambda fn, body: body == kept) as load:
        postgres.stop()
        stopped = time.monotonic()
        try:
            poll(
                "every node to be past its lease",
                lambda: all((cluster_part(n)["lease"]["age_ms"] or 0) > LEASE_MS for n in nodes),
                timeout=60,
            )
            past = time.monotonic()
            for node in nodes:
                assert serves(node, "kept", kept), node.name
                ready = httpx.get(node.url + "/readyz", timeout=10)
                cluster = ready.json()["cluster"]
                assert ready.status_code == 200 and cluster["fenced"] is False, ready.text
                assert cluster["peers"]["verdict"] == "serve" and "down for everyone" in cluster["peers"]["detail"]
            r = trio.b.deploy("kept", module("kept", 2))
            assert (r.status_code, r.json()["error"]) == (503, "registry_unavailable"), r.text
        finally:
            postgres.start()
        back = time.monotonic()
        poll("every node to renew its lease and report", lambda: healthy(trio.b, NAMES), timeout=60)
        recovered = time.monotonic()
    assert load.failures == [], load.failures[:10]
    r = trio.c.deploy("kept", module("kept", 2))
    assert r.status_code == 201 and r.json()["nodes_behind"] == 0, r.text
    assert all(serves(n, "kept", body_of("kept", 2)) for n in nodes)
    print(
        f"\n[cluster figures] PostgreSQL stopped: every node past its lease {(past - stopped) * 1000:.0f} ms after "
        f"and still serving; after it returned ({(back - stopped) * 1000:.0f} ms down) every node healthy in "
        f"{(recovered - back) * 1000:.0f} ms; {load.sent} requests under load, 0 failed",
        flush=True,
    )


def test_postgres_returns_while_a_node_is_still_cut_off(trio: Trio, postgres: PgServer) -> None:
    """Every node serves on through an outage; fa is cut off just before PostgreSQL returns, so the others
    reconnect and commit while it cannot. The change waits until fa has fenced: fa never serves the old
    build after the change answered."""
    a, b = trio.a, trio.b
    r = b.deploy("late", module("late", 1))
    assert r.status_code == 201 and r.json()["nodes_behind"] == 0, r.text
    old = body_of("late", 1)
    postgres.stop()
    try:
        poll(
            "every node past its lease, serving on",
            lambda: all(
                (cluster_part(n)["lease"]["age_ms"] or 0) > LEASE_MS and cluster_part(n)["fenced"] is False
                for n in trio.nodes
            ),
            timeout=60,
        )
        trio.proxy.stall()
    finally:
        postgres.start()
    try:
        with Watch(a, "late") as watch:
            poll("fb to renew its lease", lambda: cluster_part(b)["lease"]["held"] is True, timeout=60)
            started = time.monotonic()
            r = b.deploy("late", module("late", 2))
            answered = time.monotonic()
            assert r.status_code == 201, r.text
            assert r.json()["behind_state"] == {"fa": "fenced"}, r.json()
            for _ in range(6):
                got = a.invoke("late")
                assert is_fenced(got), (got.status_code, got.text)
    finally:
        trio.proxy.resume()
    stale = [x for x in watch.seen if x.sent > answered and x.status == 200 and x.body == old]
    assert stale == [], stale[:5]
    resumed = time.monotonic()
    poll("fa to catch up and serve again", lambda: serves(a, "late", body_of("late", 2), tries=2), timeout=60)
    poll("every node healthy", lambda: healthy(b, NAMES), timeout=30)
    print(
        f"\n[cluster figures] PostgreSQL back while fa is still cut off: a deploy through fb waited "
        f"{(answered - started) * 1000:.0f} ms for fa to fence ({len(watch.seen)} probes of fa, none stale after "
        f"the answer); fa caught up {(time.monotonic() - resumed) * 1000:.0f} ms after its partition ended",
        flush=True,
    )


def test_a_cluster_of_one_keeps_serving_with_postgres_stopped(postgres: PgServer, tmp_path_factory) -> None:
    dsn = postgres.new_database("alone")
    solo = Node("solo", tmp_path_factory.mktemp("alone") / "data", dsn)
    solo.start()
    try:
        r = solo.deploy("own", module("own", 1))
        assert r.status_code == 201 and r.json()["nodes"] == 1, r.text
        postgres.stop()
        try:
            poll("the node to be past its lease", lambda: (cluster_part(solo)["lease"]["age_ms"] or 0) > LEASE_MS)
            assert serves(solo, "own", body_of("own", 1))
            ready = httpx.get(solo.url + "/readyz", timeout=10)
            assert ready.status_code == 200 and "cluster of one" in ready.json()["cluster"]["peers"]["detail"]
        finally:
            postgres.start()
        poll("the node to report again", lambda: healthy(solo, ["solo"]), timeout=60)
        r = solo.deploy("own", module("own", 2))
        assert r.status_code == 201 and r.json()["nodes_behind"] == 0, r.text
        assert serves(solo, "own", body_of("own", 2))
    finally:
        solo.stop()


def test_an_admin_kv_call_to_a_stalled_postgres_blocks_no_worker(trio: Trio) -> None:
    """The admin KV routes wait for PostgreSQL off the event loop: while one waits on a stalled
    connection, both of the node's workers keep answering."""
    a = trio.a
    pids = {a.admin("GET", "/healthz").json()["pid"] for _ in range(40)}
    assert len(pids) == 2  # both workers take new connections
    trio.proxy.stall()
    try:
        pending = threading.Thread(target=lambda: a.admin("GET", "/api/v1/kv/default/k"), daemon=True)
        pending.start()
        time.sleep(0.3)  # let it reach PostgreSQL
        answered: set[int] = set()
        while pending.is_alive() and answered != pids:
            with httpx.Client(base_url=a.url, timeout=5, headers={"connection": "close"}) as client:
                answered.add(client.get("/healthz").json()["pid"])
        assert pending.is_alive(), "the KV call ended before both workers answered: it was not pending"
        assert answered == pids
    finally:
        trio.proxy.resume()
