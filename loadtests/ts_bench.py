"""What a TypeScript function costs, side by side in one run (loadtests/common.py's harness):

    .venv/bin/python loadtests/ts_bench.py [--runs 3] [--seconds 8] [--functions 100]

- server CPU per request at c64, one worker pinned to CPU 0 and wrk to CPU 1: a TypeScript hello (the
  same answer as functions/hello) against the C hello, in the same server, runs interleaved; the same
  TypeScript file under Deno (`Deno.serve`, npm's `deno`) on CPU 0, for the record;
- the deploy of the TypeScript hello (the HTTP call: compile to bytecode, trial load, record, warm);
- worker RSS with 1 and with N TypeScript functions registered, each invoked once: the RSS each warm
  function adds;
- cold start: N TypeScript functions registered, the time from process start until one worker has
  answered 200 for every one of them.

Prints a table and writes loadtests/results/ts-<timestamp>.json. Not collected by pytest; nothing
asserts a time.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    HELLO_BODY,
    ROOT,
    HiveServer,
    RawClient,
    build_examples,
    ensure_wrk,
    free_port,
    log,
    one_shot,
    rss_kib,
    run_wrk,
    taskset,
    tmpdir,
)

SERVER_CPU, CLIENT_CPU = "0", "1"
JS_MANIFEST = json.dumps({"kind": "js"})
# functions/hello's answer, in TypeScript as a Supabase user writes it.
HELLO_TS = """\
interface Hello {
  name?: string;
}

Deno.serve(async (req: Request) => {
  const { name = "World" }: Hello = await req.json().catch(() => ({}));
  const timestamp = new Date().toISOString().replace(/\\.\\d{3}Z$/, "Z");
  return Response.json({ message: `Hello, ${name}!`, timestamp });
});
"""


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def build_ts(work: Path, name: str, source: str) -> bytes:
    from hive.build import build_function

    folder = work / "ts" / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.ts").write_text(source)
    (folder / "hive.toml").write_text(f'[function]\nname = "{name}"\nlanguage = "typescript"\n')
    return build_function(folder).read_bytes()


def js_env() -> dict[str, str]:
    """The engine's build dir shared with the tests (built once per machine), unless set already."""
    from hive.js import default_cache_dir

    return {"HIVE_JS_BUILD_DIR": os.environ.get("HIVE_JS_BUILD_DIR") or str(default_cache_dir())}


def cpu_per_request(work: Path, c_hello: bytes, ts_hello: bytes, runs: int, seconds: float) -> dict[str, Any]:
    log("CPU per request at c64: 1 worker on CPU 0, wrk on CPU 1; C and TypeScript hello interleaved")
    out: dict[str, Any] = {"c": [], "ts": []}
    with HiveServer(work / "cpu" / "data", workers=1, cpus=SERVER_CPU, env=js_env()).start() as srv:
        for name, blob, manifest in (
            ("hello", c_hello, json.dumps({"wasi": ["clocks"]})),
            ("hello-ts", ts_hello, JS_MANIFEST),
        ):
            status, body, _ = srv.deploy(name, blob, manifest)
            assert status == 201, body
        for path in ("/api/v1/edge/hello", "/api/v1/edge/hello-ts"):
            status, _, body, _ = one_shot(srv.port, "POST", path, HELLO_BODY)
            assert status == 200 and b"Hello, Edge Hive!" in body, body
            run_wrk(srv.port, conns=64, seconds=2, cpus=CLIENT_CPU, path=path)  # warm-up
        pids = srv.all_pids()
        for i in range(runs):
            for key, path in (("c", "/api/v1/edge/hello"), ("ts", "/api/v1/edge/hello-ts")):
                r = run_wrk(srv.port, conns=64, seconds=seconds, cpus=CLIENT_CPU, path=path, server_pids=pids)
                log(
                    f"  run {i + 1} {key:>2}: {r['rps']:.0f} req/s, p50 {r['p50'] / 1000:.2f} ms, "
                    f"p99 {r['p99'] / 1000:.2f} ms, {r['cpu_us_per_req']:.1f} us CPU/req, "
                    f"{r['errors_status'] + r['errors_timeout']:.0f} errors"
                )
                out[key].append(r)
        deploys = []
        for i in range(max(5, runs)):
            status, body, dt = srv.deploy(f"timed-{i % 2}", ts_hello, JS_MANIFEST)
            assert status == 201, body
            deploys.append(dt * 1000)
        out["deploy_ms"] = med(deploys)
        out["deploy_ms_max"] = max(deploys)
    for key in ("c", "ts"):
        rs = out[key]
        out[f"{key}_cpu_us"] = med([r["cpu_us_per_req"] for r in rs])
        out[f"{key}_rps"] = med([r["rps"] for r in rs])
        out[f"{key}_p99_ms"] = med([r["p99"] for r in rs]) / 1000
    out["ratio"] = out["ts_cpu_us"] / out["c_cpu_us"]
    return out


def deno_hello(work: Path, runs: int, seconds: float) -> dict[str, Any] | None:
    """The same TypeScript under `deno run` (Deno.serve on a free port), pinned to CPU 0."""
    sys.path.insert(0, str(ROOT))
    from tests.ts.common import deno_binary  # the suite's install: npm's deno into the TypeScript cache

    deno = deno_binary()
    if deno is None:
        log("Deno did not install from npm: no Deno figure")
        return None
    port = free_port()
    folder = work / "deno"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.ts").write_text(
        HELLO_TS.replace("Deno.serve(", f'Deno.serve({{ port: {port}, hostname: "127.0.0.1" }}, ')
    )
    proc = subprocess.Popen(
        [*taskset(SERVER_CPU), str(deno), "run", "-A", "--no-prompt", str(folder / "index.ts")],
        cwd=folder,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "NO_COLOR": "1", "DENO_NO_UPDATE_CHECK": "1"},
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if one_shot(port, "POST", "/", HELLO_BODY)[0] == 200:
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("deno did not start") from None
                time.sleep(0.05)
        run_wrk(port, conns=64, seconds=2, cpus=CLIENT_CPU, path="/")
        rs = [
            run_wrk(port, conns=64, seconds=seconds, cpus=CLIENT_CPU, path="/", server_pids=[proc.pid])
            for _ in range(runs)
        ]
        for r in rs:
            log(f"  deno: {r['rps']:.0f} req/s, p99 {r['p99'] / 1000:.2f} ms, {r['cpu_us_per_req']:.1f} us CPU/req")
        return {
            "cpu_us": med([r["cpu_us_per_req"] for r in rs]),
            "rps": med([r["rps"] for r in rs]),
            "p99_ms": med([r["p99"] for r in rs]) / 1000,
            "runs": rs,
        }
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=10)


def variants(work: Path, n: int) -> list[bytes]:
    """n distinct TypeScript hellos (each its own bytecode blob), built once and the rest by substitution."""
    base = build_ts(work, "hello-variant", HELLO_TS.replace('"World"', '"World 00000"'))
    return [base.replace(b"World 00000", f"World {i:05d}".encode()) for i in range(n)]


def memory_and_cold_start(work: Path, n: int, runs: int) -> dict[str, Any]:
    """Worker RSS with 1 and n TypeScript functions, each invoked once; and, with n registered, the time
    from process start until one worker answered 200 for all of them."""
    blobs = variants(work, n)
    out: dict[str, Any] = {}
    for count in (1, n):
        data = work / f"mem{count}" / "data"
        with HiveServer(data, workers=1, cpus=SERVER_CPU, env=js_env()).start() as srv:
            for i in range(count):
                status, body, _ = srv.deploy(f"ts{i:03d}", blobs[i], JS_MANIFEST)
                assert status == 201, body
        rss, pss, cold = [], [], []
        for _ in range(runs):
            srv = HiveServer(data, workers=1, cpus=SERVER_CPU, env=js_env())
            try:
                srv.start(wait=False)
                t0 = srv.started_at
                pending = set(range(count))
                while pending:
                    for i in sorted(pending):
                        try:
                            if one_shot(srv.port, "POST", f"/api/v1/edge/ts{i:03d}", HELLO_BODY, timeout=30)[0] == 200:
                                pending.discard(i)
                        except OSError:
                            break  # not listening yet
                    if time.perf_counter() - t0 > 120:
                        raise RuntimeError(f"{len(pending)} functions never answered:\n{srv.log()[-2000:]}")
                    if pending:
                        time.sleep(0.002)
                cold.append(time.perf_counter() - t0)
                with RawClient(srv.port) as c:
                    for _ in range(200):
                        c.request("POST", "/api/v1/edge/ts000", HELLO_BODY)
                r, p = rss_kib(srv.worker_pids()[0])
                rss.append(r / 1024)
                pss.append(p / 1024)
            finally:
                srv.stop()
        out[f"rss_{count}_mib"] = med(rss)
        out[f"pss_{count}_mib"] = med(pss)
        out[f"all_{count}_served_s"] = med(cold)
        log(
            f"  {count} TypeScript functions: all served {med(cold):.2f} s after start, worker RSS {med(rss):.1f} MiB "
            f"(PSS {med(pss):.1f})"
        )
    out["rss_per_function_mib"] = (out[f"rss_{n}_mib"] - out["rss_1_mib"]) / (n - 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--functions", type=int, default=100)
    args = ap.parse_args()
    ensure_wrk()
    work = tmpdir("hive-ts-bench-")
    c_hello = build_examples(work, ["hello"])["hello"][0]
    assert c_hello, "the C hello did not build"
    ts_hello = build_ts(work, "hello-ts", HELLO_TS)
    res: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "runs": args.runs,
        "seconds": args.seconds,
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[0],
    }
    res["cpu"] = cpu_per_request(work, c_hello, ts_hello, args.runs, args.seconds)
    res["deno"] = deno_hello(work, args.runs, args.seconds)
    res["memory"] = memory_and_cold_start(work, args.functions, args.runs)
    cpu, mem, deno = res["cpu"], res["memory"], res["deno"]
    n = args.functions
    rows = [
        (
            "server CPU per request, C hello, c64",
            f"{cpu['c_cpu_us']:.1f} us ({cpu['c_rps']:.0f} req/s, p99 {cpu['c_p99_ms']:.2f} ms)",
        ),
        (
            "server CPU per request, TypeScript hello, c64",
            f"{cpu['ts_cpu_us']:.1f} us ({cpu['ts_rps']:.0f} req/s, p99 {cpu['ts_p99_ms']:.2f} ms)",
        ),
        ("TypeScript / C", f"{cpu['ratio']:.2f}x (issue bound: at most 2x)"),
        (
            "the same hello under Deno (Deno.serve)",
            "not measured"
            if deno is None
            else f"{deno['cpu_us']:.1f} us ({deno['rps']:.0f} req/s, p99 {deno['p99_ms']:.2f} ms)",
        ),
        (
            "deploy of the TypeScript hello (HTTP call)",
            f"{cpu['deploy_ms']:.0f} ms median, {cpu['deploy_ms_max']:.0f} ms max",
        ),
        (f"worker RSS, 1 / {n} TypeScript functions", f"{mem['rss_1_mib']:.1f} / {mem[f'rss_{n}_mib']:.1f} MiB"),
        ("RSS per warm TypeScript function", f"{mem['rss_per_function_mib']:.2f} MiB (issue bound: at most 3 MiB)"),
        (f"{n} TypeScript functions: all served after start", f"{mem[f'all_{n}_served_s']:.2f} s (issue bound: 3 s)"),
    ]
    width = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    out_dir = ROOT / "loadtests" / "results"
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"ts-{time.strftime('%Y%m%d-%H%M%S')}.json"
    path.write_text(json.dumps(res, indent=2))
    print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
