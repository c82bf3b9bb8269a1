"""Telemetry that cannot be written (a read-only or broken metrics dir) never fails a request."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import time
from hive.telemetry import Telemetry, install
install()
t = Telemetry(None)
t.invocation("f", 1, 200, time.perf_counter_ns(), "r1")
t.invocation("f", 1, 502, time.perf_counter_ns(), "r2", "trap")
print("served", t.lost)
"""


def test_an_unwritable_metrics_dir_loses_records_not_requests(tmp_path: Path) -> None:
    not_a_dir = tmp_path / "metrics"
    not_a_dir.write_text("a file where the metrics dir should be")
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(not_a_dir)}
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split()[0] == "served"
    assert "cannot write metrics" in r.stderr and "make the data dir writable" in r.stderr
