"""Cluster mode on real processes: three nodes of two workers each (`edge-hive serve`, each its own data
dir and loopback port) sharing the session's PostgreSQL, under a bounded load generator.

In file order (later tests break things): deploys and rollbacks spread over the nodes, live everywhere
when they answer; server-wide rate limits across nodes; a node whose LISTEN connection is killed;
a node SIGKILLed mid-deploy and restarted; PostgreSQL restarted under load; shared KV; the CLI; a node
partitioned from PostgreSQL (fenced) and one started while cut off. Each prints its figures (`-s` shows them)."""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.cluster.cluster import Load, Node, body_of, figures, healthy, is_fenced, module, status, via
from tests.cluster.pgserver import PgServer
from tests.cluster.proxy import StallingProxy
from tests.support import poll

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

NAMES = ["n0", "n1", "n2"]


@pytest.fixture(scope="module")
def dsn(postgres: PgServer) -> str:
    return postgres.new_database("nodes")


@pytest.fixture(scope="module")
def nodes(dsn: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Node]]:
    root = tmp_path_factory.mktemp("cluster")
    started: list[Node] = []
    try:
        for name in NAMES:
            node = Node(name, root / name / "data", dsn)
            node.start()
            started.append(node)
        r = started[0].deploy("steady", module("steady", 1))
        assert r.status_code == 201 and r.json()["nodes_behind"] == 0, r.text
        yield started
    finally:
        for node in started:
            node.stop()


def serves_everywhere(nodes: list[Node], fn: str, body: bytes | None, tries: int = 4) -> None:
    """Read-your-writes: every node (on new connections, so both workers) answers `body` at once."""
    for node in nodes:
        for _ in range(tries):
            r = node.invoke(fn)
            if body is None:
                assert r.status_code == 404 and r.json()["error"] == "function_not_found", (node.name, r.text)
            else:
                assert (r.status_code, r.content) == (200, body), (node.name, r.status_code, r.text)


def versions_everywhere(nodes: list[Node], fn: str) -> list[int]:
    """Every node's replica lists the same versions of `fn` with the same current one."""
    seen = []
    for node in nodes:
        r = node.admin("GET", f"/api/v1/edge/{fn}/versions")
        assert r.status_code == 200, r.text
        seen.append((r.json()["current"], [(v["version"], v["sha256"]) for v in r.json()["versions"]]))
    assert all(s == seen[0] for s in seen), seen
    return [v for v, _ in seen[0][1]]


def steady_ok(fn: str, body: bytes) -> bool:
    return fn != "steady" or body == body_of("steady", 1)


def test_deploys_and_rollbacks_live_everywhere_under_load(nodes: list[Node]) -> None:
    first = nodes[0].deploy("moving", module("moving", 1))
    assert first.status_code == 201, first.text
    builds = {1: 1}  # version -> build
    current, next_build = 1, 2
    deploy_ms: list[float] = []
    rollback_ms: list[float] = []
    with Load(nodes, ["steady", "moving"], check=steady_ok) as load:
        for i in range(20):
            via = nodes[i % 3]
            started = time.monotonic()
            if i % 3 == 2:  # a rollback: to the previous kept version, or to a named one
                target = None if i % 2 else max(builds) - 9 if max(builds) > 10 else 1  # the oldest kept
                r = via.rollback("moving", target)
                assert r.status_code == 200, r.text
                current = r.json()["version"]
                assert target is None or current == target
                rollback_ms.append((time.monotonic() - started) * 1000)
            else:
                r = via.deploy("moving", module("moving", next_build))
                assert r.status_code == 201, r.text
                current = r.json()["version"]
                builds[current] = next_build
                next_build += 1
                deploy_ms.append((time.monotonic() - started) * 1000)
            live = r.json()
            assert (live["nodes"], live["nodes_behind"], live["behind"]) == (3, 0, []), live
            serves_everywhere(nodes, "moving", body_of("moving", builds[current]))
    assert load.failures == [], load.failures[:10]
    assert load.sent > 100 and load.statuses[200] == load.sent
    kept = versions_everywhere(nodes, "moving")
    assert kept == list(range(max(builds) - 9, max(builds) + 1))  # keep_versions = 10, pruned alike
    figures("deploy to live everywhere (3 nodes x 2 workers, under load)", deploy_ms)
    figures("rollback to live everywhere", rollback_ms)
    print(f"[cluster figures] load: {load.sent} requests, 0 failed", flush=True)
    r = nodes[1].admin("DELETE", "/api/v1/edge/moving")
    assert r.status_code == 200 and r.json()["nodes_behind"] == 0, r.text
    serves_everywhere(nodes, "moving", None)
    # Every node's view of the cluster is PostgreSQL's: the same list, all healthy and at the generation.
    views = [status(n) for n in nodes]
    assert all(v["generation"] == views[0]["generation"] for v in views)
    assert [(n["name"], n["health"], n["lag"]) for n in views[0]["nodes"]] == [(name, "ok", 0) for name in NAMES]


RPS, BURST, SECONDS = 30.0, 6, 3.0


def test_rate_limits_hold_across_nodes(nodes: list[Node]) -> None:
    """Each node admits its share (rps / 3, ceil(burst / 3)): with requests spread evenly, the cluster
    admits about one limit's worth, never three (docs/cluster.md states the tolerance)."""
    manifest = json.dumps({"rate_limit": {"rps": RPS, "burst": BURST}})
    r = nodes[2].deploy("limited", module("limited", 1), manifest)
    assert r.status_code == 201 and r.json()["nodes_behind"] == 0, r.text
    counts = {200: 0, 429: 0}
    lock = threading.Lock()
    stop = threading.Event()

    def hammer(node: Node) -> None:
        with httpx.Client(base_url=node.url, timeout=30) as c:
            while not stop.is_set():
                code = c.post("/api/v1/edge/limited").status_code
                with lock:
                    counts[code] = counts.get(code, 0) + 1
                stop.wait(0.005)  # bounded: about 150 requests a second per node at most

    threads = [threading.Thread(target=hammer, args=(n,)) for n in nodes]
    started = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(SECONDS)  # the measurement window, not a wait for an event
    stop.set()
    for t in threads:
        t.join(timeout=60)
    elapsed = time.monotonic() - started
    admitted, refused = counts[200], counts[429]
    assert set(counts) == {200, 429}, counts
    ceiling = RPS * elapsed + 3 * math.ceil(BURST / 3)  # what the shares allow at most
    print(
        f"\n[cluster figures] rate limit {RPS:.0f} rps burst {BURST} over 3 nodes: {admitted} admitted, "
        f"{refused} refused in {elapsed:.1f} s (ceiling {ceiling:.0f}; one bucket per node would allow "
        f"{3 * (RPS * elapsed + BURST):.0f})",
        flush=True,
    )
    assert refused > admitted  # the load is well above the limit
    assert admitted <= ceiling + 2  # two tokens of slack for the refill between the clock reads
    assert admitted >= 0.6 * RPS * elapsed  # and the shares add up to about the limit, not a third of it


def listen_backend(dsn: str, node: str) -> list[int]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        return [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (f"edge-hive-listen {node}",)
            )
        ]


def test_a_node_that_misses_notifications_converges(nodes: list[Node], dsn: str) -> None:
    converge_ms = []
    for attempt in range(3):
        old = listen_backend(dsn, "n2")
        assert len(old) == 1
        with psycopg.connect(dsn, autocommit=True) as conn:
            # Kill n2's LISTEN connection, and commit a change at once: n2 never hears of it.
            assert conn.execute("SELECT pg_terminate_backend(%s)", (old[0],)).fetchone() == (True,)
        started = time.monotonic()
        r = nodes[0].deploy("quiet", module("quiet", attempt + 1))
        assert r.status_code == 201, r.text
        assert r.json()["nodes_behind"] == 0, r.json()  # n2 caught up from its generation within the wait
        converge_ms.append((time.monotonic() - started) * 1000)
        serves_everywhere(nodes, "quiet", body_of("quiet", attempt + 1))
        poll(
            "n2 to listen again",
            lambda old=old: len(listen_backend(dsn, "n2")) == 1 and listen_backend(dsn, "n2") != old,
        )
    figures("deploy to live everywhere with one node's LISTEN connection killed", converge_ms)


def test_a_node_killed_mid_deploy_catches_up_before_it_is_ready(nodes: list[Node]) -> None:
    victim = nodes[1]
    r = nodes[0].deploy("doomed", module("doomed", 1))
    assert r.status_code == 201, r.text
    answers: list[httpx.Response] = []
    deploying = threading.Thread(target=lambda: answers.append(nodes[0].deploy("killed", module("killed", 1))))
    deploying.start()
    victim.kill()  # mid-deploy: somewhere between PostgreSQL's commit and the nodes' reports
    deploying.join(timeout=120)
    assert answers and answers[0].status_code == 201, answers
    # While it is down: the cluster says so, and changes no longer wait for it.
    poll(
        "n1 to be reported down",
        lambda: {n["name"]: n["health"] for n in status(nodes[0])["nodes"]}["n1"] == "down",
        timeout=30,
    )
    changes = [
        nodes[2].deploy("killed", module("killed", 2)),
        nodes[0].admin("DELETE", "/api/v1/edge/doomed"),
        nodes[2].deploy("steady-2", module("steady-2", 1)),
    ]
    for c in changes:
        assert c.status_code in (200, 201) and c.json()["nodes"] == 2 and c.json()["nodes_behind"] == 0, c.text
    # Restart it on its data dir, and watch its port from the first moment: it must never serve the
    # state it had when killed (doomed, or killed's build 1).
    seen: list[tuple[str, int, bytes]] = []
    watching = threading.Event()

    def watch() -> None:
        while not watching.is_set():
            for fn in ("doomed", "killed"):
                try:
                    r = httpx.post(f"{victim.url}/api/v1/edge/{fn}", timeout=5, headers={"connection": "close"})
                    seen.append((fn, r.status_code, r.content))
                except httpx.HTTPError:
                    pass
            watching.wait(0.002)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    try:
        server = victim.launch()
        server.wait_ready(2, timeout=90)
        ready_ms = (time.monotonic() - started) * 1000
    finally:
        watching.set()
        watcher.join(timeout=30)
    stale = [s for s in seen if s[1] == 200 and s[2] in (body_of("doomed", 1), body_of("killed", 1))]
    assert stale == [], stale[:5]
    serves_everywhere(nodes, "killed", body_of("killed", 2))
    serves_everywhere(nodes, "doomed", None)
    serves_everywhere(nodes, "steady-2", body_of("steady-2", 1))
    versions_everywhere(nodes, "killed")
    poll("n1 to be healthy again", lambda: healthy(nodes[0], NAMES), timeout=30)
    catch_up = [line for line in server.log().splitlines() if "registry at cluster generation" in line]
    assert catch_up, server.log()[-3000:]
    catch_up_ms = float(catch_up[0].rsplit(", ", 1)[1].split(" ms")[0])
    print(
        f"\n[cluster figures] SIGKILLed node restarted: ready in {ready_ms:.0f} ms after launch, its catch-up "
        f"{catch_up_ms:.1f} ms ({len(seen)} probes while it started, none stale)",
        flush=True,
    )


def test_postgres_restart_under_load(nodes: list[Node], postgres: PgServer) -> None:
    with Load(nodes, ["steady"], check=steady_ok) as load:
        postgres.stop()
        down_at = time.monotonic()
        try:
            fails_ms = []
            for node in nodes:  # deploys fail fast with 503 registry_unavailable, on every node
                started = time.monotonic()
                r = node.deploy("during", module("during", 1))
                fails_ms.append((time.monotonic() - started) * 1000)
                assert r.status_code == 503 and r.json()["error"] == "registry_unavailable", r.text
                assert node.rollback("steady").json()["error"] == "registry_unavailable"
                ready = httpx.get(node.url + "/readyz", timeout=10)
                assert ready.status_code == 200 and ready.json()["cluster"]["caught_up"], ready.text
            poll(
                "the replicators to notice",
                lambda: all(not httpx.get(n.url + "/readyz", timeout=10).json()["cluster"]["connected"] for n in nodes),
                timeout=30,
            )
            kv = nodes[0].admin("GET", "/api/v1/kv")
            assert kv.status_code == 503 and kv.json()["error"] == "kv_unavailable", kv.text
            serves_everywhere(nodes, "steady", body_of("steady", 1))
        finally:
            postgres.start()
        up_at = time.monotonic()
        poll("every node to report again", lambda: healthy(nodes[0], NAMES), timeout=60)
        recovered_ms = (time.monotonic() - up_at) * 1000
        r = nodes[1].deploy("during", module("during", 2))  # no retry: the first change after works
        assert r.status_code == 201 and r.json()["nodes_behind"] == 0, r.text
        serves_everywhere(nodes, "during", body_of("during", 2))
    assert load.failures == [], load.failures[:10]
    figures("deploy refused while PostgreSQL is down (503)", fails_ms)
    print(
        f"[cluster figures] PostgreSQL down {(up_at - down_at) * 1000:.0f} ms under load: {load.sent} requests, "
        f"0 failed; every node healthy {recovered_ms:.0f} ms after it returned",
        flush=True,
    )


def test_nodes_share_kv(nodes: list[Node]) -> None:
    """The KV store is PostgreSQL's: what one node writes, every node reads."""
    r = nodes[0].admin("PUT", "/api/v1/kv/shared/greeting", content=b"hello from n0")
    assert r.status_code in (200, 201, 204), r.text
    for node in nodes:
        got = node.admin("GET", "/api/v1/kv/shared/greeting")
        assert got.status_code == 200 and got.content == b"hello from n0", (node.name, got.text)


def test_cluster_status_cli(nodes: list[Node], tmp_path: Path) -> None:
    from click.testing import CliRunner

    from hive.cli import main

    r = CliRunner().invoke(main, ["cluster", "--url", nodes[2].url, "--token", "test-admin-token", "status"])
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.output.splitlines()[2:]]
    assert [(row[0], row[1], row[5]) for row in rows] == [(name, "ok", "held") for name in NAMES], r.output


def test_a_partitioned_node_converges_and_a_new_one_is_ready_only_after_its_catch_up(
    nodes: list[Node], dsn: str, postgres: PgServer, tmp_path: Path
) -> None:
    """A fourth node reaches PostgreSQL through a proxy that can stall (connections kept open, no bytes
    moved: only the node's own timeouts notice): fenced once its lease runs out (tests/cluster/test_fencing.py
    has the details); a fifth starts while its proxy is stalled."""
    p3, p4 = StallingProxy(postgres.port), StallingProxy(postgres.port)
    n3 = Node("n3", tmp_path / "n3" / "data", via(p3.port, dsn, postgres.port))
    n4 = Node("n4", tmp_path / "n4" / "data", via(p4.port, dsn, postgres.port))
    everyone = [*nodes, n3]
    try:
        n3.start()
        r = nodes[0].deploy("parted", module("parted", 1))
        assert r.status_code == 201 and (r.json()["nodes"], r.json()["nodes_behind"]) == (4, 0), r.text
        serves_everywhere(everyone, "parted", body_of("parted", 1))
        p3.stall()
        started = time.monotonic()
        r = nodes[0].deploy("parted", module("parted", 2))  # waits for n3 until its lease runs out
        assert r.status_code == 201, r.text
        assert (r.json()["nodes"], r.json()["behind"], r.json()["behind_state"]) == (4, ["n3"], {"n3": "fenced"})
        dropped_ms = (time.monotonic() - started) * 1000
        serves_everywhere(nodes, "parted", body_of("parted", 2))
        for _ in range(4):  # cut off while the others reach PostgreSQL: it refuses rather than serve build 1
            assert is_fenced(n3.invoke("parted"))
        poll(
            "n3 to notice it is cut off",
            lambda: not httpx.get(n3.url + "/readyz", timeout=10).json()["cluster"]["connected"],
            timeout=60,
        )
        noticed_ms = (time.monotonic() - started) * 1000
        p3.resume()
        back = time.monotonic()
        poll("n3 to converge", lambda: n3.invoke("parted").content == body_of("parted", 2), timeout=60)
        converge_ms = (time.monotonic() - back) * 1000
        serves_everywhere(everyone, "parted", body_of("parted", 2))
        versions_everywhere(everyone, "parted")
        poll("n3 to be healthy", lambda: healthy(nodes[0], [*NAMES, "n3"]), timeout=30)

        p4.stall()
        server = n4.launch()
        launched = time.monotonic()
        answers: list[int] = []
        while time.monotonic() - launched < 4:  # while it cannot reach PostgreSQL: never ready
            assert server.proc.poll() is None, server.log()
            try:
                answers.append(httpx.get(n4.url + "/readyz", timeout=5).status_code)
            except httpx.HTTPError:
                answers.append(0)  # not accepting yet: its workers wait for the catch-up
            time.sleep(0.05)  # polling interval
        assert 200 not in answers, answers
        p4.resume()
        resumed = time.monotonic()
        server.wait_ready(2, timeout=90)
        ready_ms = (time.monotonic() - resumed) * 1000
        serves_everywhere([n4], "parted", body_of("parted", 2))
        serves_everywhere([n4], "steady", body_of("steady", 1))
    finally:
        n3.stop()
        n4.stop()
        p3.close()
        p4.close()
    print(
        f"\n[cluster figures] partitioned node: deploys stopped waiting for it (its lease ran out, it fenced) after "
        f"{dropped_ms:.0f} ms, it noticed after {noticed_ms:.0f} ms, converged {converge_ms:.0f} ms after the partition ended; a node "
        f"started while cut off ({len(answers)} probes, none ready) was ready {ready_ms:.0f} ms after",
        flush=True,
    )
