"""Invocation telemetry counted on the event loop and written once per loop turn stays exact: the
multiprocess files hold every call after the turn, and the formatted log line is the JSON the dict
path writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import msgspec

from hive.logs import FunctionLog
from hive.telemetry import _INVOCATION_LINE

SCRIPT = """
import asyncio, json, sys, time
from prometheus_client import CollectorRegistry, multiprocess
from hive.logs import FunctionLog
from hive.telemetry import Telemetry, install

install()
t = Telemetry(FunctionLog(sys.argv[1]))

def counts():
    reg = CollectorRegistry()
    multiprocess.MultiProcessCollector(reg)
    out = {}
    for fam in reg.collect():
        for s in fam.samples:
            if s.name in ("hive_invocations_total", "hive_invocation_duration_seconds_count"):
                out[s.name + ":" + s.labels.get("status", "")] = s.value
    return out

async def main():
    for i in range(300):
        t.invocation("hello", 1, 200, time.perf_counter_ns(), "r%d" % i)
    t.invocation("hello", 1, 502, time.perf_counter_ns(), "bad", "trap")
    before = counts()
    await asyncio.sleep(0)  # one loop turn: the flush
    await asyncio.sleep(0)
    after = counts()
    for i in range(7):
        t.invocation("hello", 1, 200, time.perf_counter_ns(), "s%d" % i)
    t.flush()  # what shutdown does
    print(json.dumps({"before": before, "after": after, "end": counts()}))

asyncio.run(main())
"""


def test_counts_reach_the_multiprocess_files_by_the_next_loop_turn(tmp_path: Path) -> None:
    metrics = tmp_path / "metrics"
    metrics.mkdir()
    log = tmp_path / "functions.jsonl"
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(log)],
        capture_output=True,
        text=True,
        env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics)},
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["before"].get("hive_invocations_total:200", 0) == 0  # counted, not yet written
    assert got["after"]["hive_invocations_total:200"] == 300
    assert got["after"]["hive_invocations_total:502"] == 1
    assert got["after"]["hive_invocation_duration_seconds_count:"] == 301
    assert got["end"]["hive_invocations_total:200"] == 307
    lines = [json.loads(x) for x in log.read_text().splitlines()]
    assert [x["request_id"] for x in lines] == [f"r{i}" for i in range(300)] + ["bad"] + [f"s{i}" for i in range(7)]
    assert lines[300]["error"] == "trap" and lines[0]["status"] == 200 and lines[0]["kind"] == "invocation"


def test_the_formatted_line_is_the_json_of_the_record() -> None:
    enc = msgspec.json.Encoder().encode
    for function, rid in [("hello", "0123abcd"), ('we"ird\\name', 'id"with\nnewline'), ("ünï", "a.b:c-d_e")]:
        record = {
            "ts": "2026-12-03T08:00:00.123Z",
            "kind": "invocation",
            "function": function,
            "version": 12,
            "status": 404,
            "duration_us": 98765,
            "pid": 4321,
            "request_id": rid,
        }
        fast = _INVOCATION_LINE % (b"2026-12-03T08:00:00.123Z", enc(function), 12, 404, 98765, 4321, enc(rid))
        assert fast == FunctionLog.line(record)
