"""Metrics aggregated across workers (prometheus multiprocess), per-function stats, and the function log."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import httpx
import pytest

from tests.guests import TRAP_WAT, const_wat, wat
from tests.support import BIN, Server

pytestmark = pytest.mark.slow


def sample(text: str, name: str, **labels: str) -> float:
    """The value of one Prometheus sample, by name and exact labels."""
    total = None
    for line in text.splitlines():
        m = re.match(r"^([a-zA-Z_:]+)(?:\{(.*)\})? (\S+)$", line)
        if not m or m.group(1) != name:
            continue
        got = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2) or ""))
        if all(got.get(k) == v for k, v in labels.items()):
            total = (total or 0) + float(m.group(3))
    assert total is not None, f"no {name}{labels} in /metrics"
    return total


def fresh(server: Server, method: str, path: str, **kw) -> httpx.Response:
    with server.client(headers={"connection": "close"}) as c:
        return c.request(method, path, **kw)


def test_metrics_and_stats_add_up_across_workers(server: Server) -> None:
    server.deploy("counted", wat(const_wat("ok")))
    server.deploy("broken", wat(TRAP_WAT))
    pids = set()
    for _ in range(60):
        assert fresh(server, "POST", "/api/v1/edge/counted").status_code == 200
        pids.add(fresh(server, "GET", "/healthz").json()["pid"])
    for _ in range(5):
        assert fresh(server, "POST", "/api/v1/edge/broken").status_code == 502
    assert fresh(server, "GET", "/metrics").status_code == 401

    text = fresh(server, "GET", "/metrics", headers=server.admin).text
    assert len(pids) == 2  # both workers served, so the figures below are sums over both
    assert sample(text, "hive_invocations_total", function="counted", status="200") == 60
    assert sample(text, "hive_invocations_total", function="broken", status="502") == 5
    assert sample(text, "hive_errors_total", function="broken", code="trap") == 5
    assert sample(text, "hive_invocation_duration_seconds_count", function="counted") == 60
    assert sample(text, "hive_deploys_total", function="counted", kind="deploy") == 1
    deadline = time.monotonic() + 10
    while True:  # gauges are refreshed by each worker's background task
        text = fresh(server, "GET", "/metrics", headers=server.admin).text
        try:
            if sample(text, "hive_warm_instances") >= 4 and sample(text, "hive_worker_rss_bytes") > 0:
                break
        except AssertionError:
            pass
        assert time.monotonic() < deadline, text
        time.sleep(0.1)

    rows = {r["function"]: r for r in fresh(server, "GET", "/api/v1/edge", headers=server.admin).json()["functions"]}
    assert rows["counted"]["invocations"] == 60 and rows["counted"]["errors"] == 0
    assert 0 < rows["counted"]["p50_ms"] <= rows["counted"]["p99_ms"]
    assert rows["broken"]["invocations"] == 5 and rows["broken"]["errors"] == 5


def test_one_json_log_line_per_invocation(server: Server) -> None:
    server.deploy("logged", wat(const_wat("ok")))
    ids = [f"req-{i}" for i in range(8)]
    for rid in ids:
        assert fresh(server, "POST", "/api/v1/edge/logged", headers={"x-request-id": rid}).status_code == 200
    r = fresh(server, "GET", "/api/v1/edge/logged/logs", headers=server.admin, params={"lines": "100"})
    records = [json.loads(line) for line in r.text.splitlines()]
    invocations = [rec for rec in records if rec["kind"] == "invocation"]
    assert [rec["request_id"] for rec in invocations] == ids
    for rec in invocations:
        assert rec["function"] == "logged" and rec["version"] == 1 and rec["status"] == 200
        assert isinstance(rec["duration_us"], int) and rec["pid"] in server.worker_pids()


def test_logs_follow_streams_new_lines(server: Server) -> None:
    server.deploy("followed", wat(const_wat("ok")))
    env = {**os.environ, "HIVE_URL": server.url, "HIVE_ADMIN_TOKEN": server.token}
    proc = subprocess.Popen(
        [str(BIN / "edge-hive"), "function", "logs", "followed", "--follow", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        deadline = time.monotonic() + 30
        fresh(server, "POST", "/api/v1/edge/followed", headers={"x-request-id": "follow-1"})
        seen = []
        while not any(json.loads(line).get("request_id") == "follow-1" for line in seen):
            assert time.monotonic() < deadline, seen
            fresh(server, "POST", "/api/v1/edge/followed", headers={"x-request-id": "follow-1"})
            seen.append(proc.stdout.readline())
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_burst_is_logged_exactly_once_per_request(server: Server) -> None:
    """Lines written in one loop turn go out in one write(): under a concurrent burst on both workers the
    log still has one whole line per request, and each is there once its response arrived."""
    import asyncio

    server.deploy("burst", wat(const_wat("ok")))
    ids = [f"burst-{i}" for i in range(300)]

    async def fire() -> list[int]:
        limits = httpx.Limits(max_connections=32)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as c:
            sem = asyncio.Semaphore(32)

            async def one(rid: str) -> int:
                async with sem:
                    r = await c.post("/api/v1/edge/burst", headers={"x-request-id": rid})
                    return r.status_code

            return await asyncio.gather(*(one(rid) for rid in ids))

    assert set(asyncio.run(fire())) == {200}
    r = fresh(server, "GET", "/api/v1/edge/burst/logs", headers=server.admin, params={"lines": "1000"})
    records = [json.loads(line) for line in r.text.splitlines()]  # every line whole JSON
    logged = [rec["request_id"] for rec in records if rec["kind"] == "invocation"]
    assert sorted(logged) == sorted(ids)
    assert {rec["pid"] for rec in records} <= server.worker_pids()
