"""The psutil watchdog: unit tests of Watchdog.check() on this very process, and a real worker that a
guest pushes over its RSS ceiling being recycled gracefully while another function keeps serving."""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from tests.guests import const_wat, wat
from tests.load import Load
from tests.support import Server, live_workers, poll, start_server
from workers.watchdog import Watchdog

pytestmark = pytest.mark.slow

MiB = 1 << 20


def watchdog(
    *,
    rss: int = 0,
    cpu: float = 0.0,
    window: float = 30.0,
    interval: float = 1.0,
    on_trip: Callable[[str], None] = lambda reason: None,
) -> Watchdog:
    return Watchdog(max_rss_mb=rss, max_cpu_percent=cpu, cpu_window_s=window, interval_s=interval, on_trip=on_trip)


def burn_cpu(seconds: float) -> None:
    """Busy-loop until this process has used `seconds` of CPU (bounded in wall time)."""
    start, deadline = time.process_time(), time.monotonic() + 60
    n = 0
    while time.process_time() - start < seconds and time.monotonic() < deadline:
        n += sum(i * i for i in range(1000))


def test_rss_ceiling_below_current_rss_trips() -> None:
    rss_mib = psutil.Process().memory_info().rss / MiB
    assert rss_mib > 2
    reason = watchdog(rss=1).check()
    assert reason is not None
    m = re.fullmatch(r"RSS (\d+\.\d) MiB is over the ceiling of 1 MiB", reason)
    assert m and float(m.group(1)) > 1, reason
    assert watchdog(rss=int(rss_mib) + 4096).check() is None


def test_cpu_ceiling_with_a_tiny_window_trips_after_a_busy_loop() -> None:
    wd = watchdog(cpu=10, window=0.05)
    assert wd.check() is None  # one sample: nothing measured yet
    burn_cpu(0.3)  # about 100% of a core, well over 10%, for longer than the window
    reason = wd.check()
    assert reason is not None
    m = re.fullmatch(r"CPU (\d+)% sustained over \d+ s is over the ceiling of 10%", reason)
    assert m and int(m.group(1)) > 10, reason


def test_cpu_under_the_ceiling_does_not_trip() -> None:
    wd = watchdog(cpu=1000, window=0.05)  # one busy thread cannot use ten cores
    assert wd.check() is None
    burn_cpu(0.2)
    assert wd.check() is None


def test_off_when_zero() -> None:
    wd = watchdog(rss=0, cpu=0, window=0.01)
    burn_cpu(0.1)
    assert wd.check() is None
    burn_cpu(0.1)
    assert wd.check() is None


def test_run_trips_once_and_returns() -> None:
    reasons: list[str] = []
    wd = watchdog(rss=1, interval=0.01, on_trip=reasons.append)
    asyncio.run(asyncio.wait_for(wd.run(), timeout=30))
    assert len(reasons) == 1 and reasons[0].startswith("RSS ")


# --- a real worker over its RSS ceiling ---

HOG_PAGES = 96 * 16  # 96 MiB of 64 KiB wasm pages


def hog_wat(body: str) -> str:
    """On each call: grow guest memory to 96 MiB and fill it with non-zero bytes, so every page is
    resident; the warm instance keeps it alive between calls."""
    return const_wat(
        body,
        work=f"""
    (if (i32.lt_u (memory.size) (i32.const {HOG_PAGES}))
      (then
        (if (i32.eq (memory.grow (i32.sub (i32.const {HOG_PAGES}) (memory.size))) (i32.const -1))
          (then unreachable))))
    (memory.fill (i32.const 65536) (i32.const 0x5a)
                 (i32.sub (i32.shl (memory.size) (i32.const 16)) (i32.const 65536)))""",
    )


HOG_MANIFEST = json.dumps({"limits": {"memory_mb": 256, "timeout_ms": 10_000}})
# Guest time limits run on the wall clock: on a loaded 2-core machine a worker can be off the CPU for
# over the default 100 ms in the middle of a trivial call (a 504, not a watchdog problem).
STEADY = json.dumps({"limits": {"timeout_ms": 10_000}})


def worker_rss_mib(server: Server) -> float:
    return max(psutil.Process(pid).memory_info().rss / MiB for pid in live_workers(server))


def test_worker_over_its_rss_ceiling_is_recycled_while_others_keep_serving(tmp_path: Path) -> None:
    data = tmp_path / "data"
    # 1. A fresh worker's RSS, with both functions warm and some traffic served, watchdog off.
    probe = start_server(data, workers=2, env={"HIVE_WORKER_MAX_RSS_MB": "0"})
    try:
        assert probe.deploy("normal", wat(const_wat("normal")), STEADY).status_code == 201
        assert probe.deploy("hog", wat(hog_wat("held")), HOG_MANIFEST).status_code == 201
        with Load(probe.url, "/api/v1/edge/normal", clients=4, max_seconds=30) as load:
            load.wait_for(300)
        assert not load.failures(), load.summary()
        fresh_rss = worker_rss_mib(probe)
    finally:
        probe.stop()

    # 2. The same data dir (both functions deployed) with a ceiling the hog's 96 MiB must cross.
    ceiling = int(fresh_rss) + 40
    server = start_server(
        data, workers=2, env={"HIVE_WORKER_MAX_RSS_MB": str(ceiling), "HIVE_WATCHDOG_INTERVAL_MS": "100"}
    )
    try:
        with Load(server.url, "/api/v1/edge/normal", clients=4, max_seconds=50) as load:
            load.wait_for(100)
            old = live_workers(server)
            assert len(old) == 2 and worker_rss_mib(server) < ceiling
            with server.client(headers={"connection": "close"}) as c:
                r = c.post("/api/v1/edge/hog")
            assert r.status_code == 200 and r.text == "held", r.text
            poll(
                "the hog's worker to be recycled",
                lambda: len(p := live_workers(server)) == 2 and len(p - old) == 1 and len(old - p) == 1,
            )
            gone = (old - live_workers(server)).pop()
            server.wait_ready(2)
            recycled = time.monotonic()
            poll("load after the recycle", lambda: sum(1 for x in load.results if x.sent_at > recycled) >= 100)
        assert len(load.results) >= 200
        assert not load.failures(), f"{load.failures()[:5]}; {load.summary()}"
        assert {x.body for x in load.results} == {b"normal"}
        log = server.log()
        m = re.search(rf"worker {gone} recycling: RSS (\d+\.\d) MiB is over the ceiling of {ceiling} MiB", log)
        assert m, log[-3000:]
        assert float(m.group(1)) > ceiling
        assert log.count("recycling:") == 1, log[-3000:]  # only the hog's worker
        assert old - {gone} <= live_workers(server)
    finally:
        server.stop()
