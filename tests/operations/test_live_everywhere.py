"""A deploy, rollback or delete answers once every live worker has loaded it (hive.peers), so the next
request on any worker is served warm by the new version. Real gunicorn servers; the background sync
is slowed to 500 ms, so without the wait the other workers would still be behind when it answers."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.guests import const_wat, wat
from tests.support import Server, live_workers, poll, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(
        tmp_path_factory.mktemp("live") / "data",
        workers=3,
        env={"HIVE_SYNC_INTERVAL_MS": "500", "HIVE_SYNC_WAIT_MS": "20000"},
    )
    yield s
    s.stop()


def marks(data_dir: Path) -> dict[int, int]:
    """pid -> the generation that worker serves, as its sync mark says."""
    out = {}
    for p in (data_dir / "run").glob("sync-*"):
        out[int(p.name[5:])] = int(p.read_text().split()[0])
    return out


def fresh(server: Server, method: str, path: str, **kw: object) -> httpx.Response:
    with server.client(headers={"connection": "close"}) as c:
        return c.request(method, path, **kw)  # type: ignore[arg-type]


def test_every_worker_serves_a_change_when_it_answers(server: Server) -> None:
    workers = live_workers(server)
    assert set(marks(server.data_dir)) == workers
    for i, change in enumerate(["deploy", "deploy", "rollback", "deploy", "delete"]):
        if change == "deploy":
            r = server.deploy("live", wat(const_wat(f"build-{i}")))
            assert r.status_code == 201, r.text
        elif change == "rollback":
            r = fresh(server, "POST", "/api/v1/edge/live/rollback", headers=server.admin)
            assert r.status_code == 200, r.text
        else:
            r = fresh(server, "DELETE", "/api/v1/edge/live", headers=server.admin)
            assert r.status_code == 200, r.text
        gen = r.json()["generation"]
        assert r.json()["workers_behind"] == 0
        now = marks(server.data_dir)  # read at once: no worker had time to catch up by itself
        assert set(now) == workers and all(g >= gen for g in now.values()), (change, gen, now)
    assert live_workers(server) == workers


def test_a_stopped_worker_delays_the_answer_only_up_to_sync_wait(tmp_path: Path) -> None:
    s = start_server(tmp_path / "data", workers=2, env={"HIVE_SYNC_INTERVAL_MS": "20", "HIVE_SYNC_WAIT_MS": "1000"})
    try:
        assert s.deploy("paused", wat(const_wat("v1"))).status_code == 201
        stopped = min(live_workers(s))
        os.kill(stopped, signal.SIGSTOP)  # our own server's worker, by pid
        try:
            r = s.deploy("paused", wat(const_wat("v2")))  # only the running worker can accept it
            assert r.status_code == 201, r.text
            assert r.json()["workers_behind"] == 1
            assert marks(s.data_dir)[stopped] < r.json()["generation"]
            assert "had not loaded generation" in s.log()
        finally:
            os.kill(stopped, signal.SIGCONT)
        gen = r.json()["generation"]
        poll("the stopped worker to catch up", lambda: marks(s.data_dir).get(stopped, -1) >= gen)
        for _ in range(6):  # both workers serve v2
            assert fresh(s, "POST", "/api/v1/edge/paused").text == "v2"
    finally:
        s.stop()


def test_a_reload_leaves_marks_for_the_new_workers_only(server: Server) -> None:
    old = live_workers(server)
    os.kill(server.proc.pid, signal.SIGHUP)
    poll("new workers", lambda: len(live_workers(server)) == 3 and not live_workers(server) & old, timeout=60)
    server.wait_ready(3)
    # The old workers removed their marks when they stopped.
    poll("the old marks to go", lambda: set(marks(server.data_dir)) == live_workers(server), timeout=30)
    r = server.deploy("after-reload", wat(const_wat("ok")))
    assert r.status_code == 201 and r.json()["workers_behind"] == 0
    assert all(g >= r.json()["generation"] for g in marks(server.data_dir).values())
