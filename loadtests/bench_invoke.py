"""Host invocation overhead in-process, no HTTP: encode the request, call the guest, decode the response.

    .venv/bin/python loadtests/bench_invoke.py [--calls 20000] [--runs 5] [--json]

Builds functions/hello from source, prints the median per-call time of each run and the median of
the runs (with --json, one JSON line as well). Not collected by pytest; no test asserts a time.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from hive import abi
from hive.build import build_function
from hive.sandbox import GuestContext, GuestInstance, GuestLimits, Sandbox, fastcall

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="also print one JSON line with every figure")
    args = ap.parse_args()
    fastcall.install()  # as a worker does after fork: the benchmark measures the path servers run

    work = Path(tempfile.mkdtemp(prefix="hive-bench-"))
    try:
        folder = work / "hello"
        shutil.copytree(ROOT / "functions" / "hello", folder, ignore=shutil.ignore_patterns("*.wasm"))
        wasm = build_function(folder).read_bytes()
        sandbox = Sandbox(work / "cache")
        compiled = sandbox.compile(
            wasm,
            "bench",
            frozenset({"clock_time_get", "fd_write", "fd_close", "fd_seek", "fd_fdstat_get", "proc_exit"}),
        )
        guest = GuestInstance(sandbox, compiled, GuestLimits(), GuestContext("hello"))
        headers = [(b"host", b"127.0.0.1:8443"), (b"content-type", b"application/json"), (b"content-length", b"21")]
        body = b'{"name": "Edge Hive"}'

        def once() -> None:
            env = abi.encode_request(b"POST", b"/api/v1/edge/hello", b"", headers, body)
            resp = guest.call(env)
            assert resp.status == 200

        for _ in range(1000):
            once()
        medians = []
        for run in range(args.runs):
            samples = []
            for _ in range(args.calls):
                t0 = time.perf_counter_ns()
                once()
                samples.append(time.perf_counter_ns() - t0)
            medians.append(statistics.median(samples) / 1000)
            print(f"run {run + 1}: median {medians[-1]:.1f} us/call over {args.calls} calls")
        print(f"host invocation overhead (hello): median of runs {statistics.median(medians):.1f} us")
        if args.json:
            print(
                "BENCH "
                + json.dumps({"median_us": statistics.median(medians), "runs_us": medians, "calls": args.calls})
            )
        sandbox.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
