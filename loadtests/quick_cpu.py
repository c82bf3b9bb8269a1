"""A quick look while optimising: one worker on CPU 0, wrk on CPU 1, hello at c1 and c64.

.venv/bin/python loadtests/quick_cpu.py [--seconds 5] [--profile py-spy-output.svg]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BIN, HiveServer, build_examples, run_wrk, tmpdir  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--profile", help="record the worker with py-spy into this file (speedscope/svg)")
    ap.add_argument("--conns", default="1,64")
    ap.add_argument(
        "--path",
        default="/api/v1/edge/hello",
        help="e.g. /api/v1/edge/%%68ello: the same function through the Starlette route",
    )
    args = ap.parse_args()
    work = tmpdir("hive-quick-")
    hello = build_examples(work, ["hello"])["hello"][0]
    assert hello
    with HiveServer(work / "data", workers=1, cpus="0").start() as srv:
        srv.deploy("hello", hello)
        pids = srv.all_pids()
        run_wrk(srv.port, conns=64, seconds=1, cpus="1", path=args.path)
        spy = None
        if args.profile:
            fmt = (
                "speedscope"
                if args.profile.endswith(".json")
                else "raw"
                if args.profile.endswith(".txt")
                else "flamegraph"
            )
            spy = subprocess.Popen(
                [
                    str(BIN / "py-spy"),
                    "record",
                    "-p",
                    str(srv.worker_pids()[0]),
                    "-o",
                    args.profile,
                    "-f",
                    fmt,
                    "-r",
                    "200",
                    *(["--native"] if "native" in args.profile else []),
                    "-d",
                    str(int(args.seconds) + 1),
                ]
            )
        for c in (int(x) for x in args.conns.split(",")):
            r = run_wrk(srv.port, conns=c, seconds=args.seconds, cpus="1", server_pids=pids, path=args.path)
            print(
                f"c{c}: {r['rps']:.0f} req/s p50 {r['p50'] / 1000:.2f} ms p99 {r['p99'] / 1000:.2f} ms "
                f"cpu {r['cpu_us_per_req']:.1f} us/req errors {r['errors_status']}"
            )
        if spy:
            spy.wait()


if __name__ == "__main__":
    main()
