"""Before/after, side by side in one run: hello's server CPU per request (c64, one worker on CPU 0, wrk on
CPU 1) and the in-process invocation overhead, for this checkout and an earlier revision.

    .venv/bin/python loadtests/compare.py --before 11f8427 [--rounds 3] [--seconds 8]

The earlier revision is checked out with `git worktree` into a temp dir and run with PYTHONPATH pointing
at it (the venv's packages are shared; the editable install's finder comes after sys.path). Rounds
interleave the two servers so that a busy neighbour on this shared machine weighs on both alike.
Prints medians and the ratio. Not collected by pytest; no test asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ROOT, HiveServer, RefServer, build_examples, ensure_wrk, run_wrk, tmpdir  # noqa: E402


def bench_invoke(tree: Path, calls: int) -> float:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(tree / "loadtests" / "bench_invoke.py"), "--calls", str(calls), "--runs", "3", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tree,
        timeout=900,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("BENCH ")][-1]
    return float(json.loads(line.removeprefix("BENCH "))["median_us"])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="git revision to compare against")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--calls", type=int, default=20000)
    args = ap.parse_args()
    ensure_wrk()
    work = tmpdir("hive-compare-")
    old = work / "before"
    subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(old), args.before], check=True, capture_output=True
    )
    try:
        hello = build_examples(work, ["hello"])["hello"][0]
        assert hello
        trees = {"before": old, "after": ROOT}
        servers = {}
        for label, tree in trees.items():
            env = {"PYTHONPATH": str(tree)}
            servers[label] = HiveServer(work / f"data-{label}", workers=1, cpus="0", env=env).start()
            servers[label].deploy("hello", hello)
        # The references in the same run: Node's http and the bare uvloop + httptools Python floor.
        refs = {"node": RefServer("node", cpus="0").start(), "bare": RefServer("bare", cpus="0").start()}
        labels = [*trees, *refs]
        cpu: dict[str, list[float]] = {k: [] for k in labels}
        p99: dict[str, list[float]] = {k: [] for k in labels}
        inproc: dict[str, list[float]] = {k: [] for k in trees}
        try:
            every: dict[str, Any] = {**servers, **refs}
            for srv in every.values():
                run_wrk(srv.port, conns=64, seconds=1, cpus="1")  # warm
            for r in range(args.rounds):
                for label in labels if r % 2 == 0 else list(reversed(labels)):
                    srv = every[label]
                    res = run_wrk(srv.port, conns=64, seconds=args.seconds, cpus="1", server_pids=srv.all_pids())
                    cpu[label].append(res["cpu_us_per_req"])
                    p99[label].append(res["p99"] / 1000)
                    print(
                        f"round {r + 1} {label:>6}: {res['cpu_us_per_req']:.1f} us/req, {res['rps']:.0f} req/s, "
                        f"p99 {res['p99'] / 1000:.2f} ms",
                        flush=True,
                    )
        finally:
            for srv in [*servers.values(), *refs.values()]:
                srv.stop()
        for r in range(args.rounds):
            for label in trees if r % 2 == 0 else reversed(list(trees)):
                inproc[label].append(bench_invoke(trees[label], args.calls))
        med = {k: statistics.median(v) for k, v in cpu.items() if v}
        med_in = {k: statistics.median(v) for k, v in inproc.items()}
        print(
            json.dumps(
                {
                    "cpu_us_per_req": med,
                    "p99_ms": {k: statistics.median(v) for k, v in p99.items()},
                    "invoke_us": med_in,
                    "cpu_ratio": med["after"] / med["before"],
                    "invoke_ratio": med_in["after"] / med_in["before"],
                    "rounds": args.rounds,
                    "seconds": args.seconds,
                    "before": args.before,
                }
            )
        )
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(old)], capture_output=True)


if __name__ == "__main__":
    main()
