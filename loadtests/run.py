"""The Edge Hive load-test harness: one command, real servers on 127.0.0.1, a table at the end.

    .venv/bin/python loadtests/run.py            # full run, about 5 minutes here
    .venv/bin/python loadtests/run.py --quick    # 3 s per wrk run, about 3 minutes
    .venv/bin/python loadtests/run.py --section before   # which block of docs/performance.md to (re)write
    .venv/bin/python loadtests/run.py --only noisy,whole  # a subset, printed only (invoke,percore,whole,cold,noisy)

It builds the examples from source (hive.build.build_function), starts `edge-hive serve` with the
examples deployed, and measures with wrk (Debian package `wrk`, installed by apt-get when missing and
running as root) and loadtests/post.lua:

- req/s and p50/p99/p99.9 at 1 and 64 connections; server CPU time per request (utime+stime of the
  master and workers from /proc over the run, divided by the requests). Per core: 1 worker pinned to
  CPU 0 with taskset, wrk pinned to CPU 1. Whole machine: 2 workers and wrk, unpinned;
- Node's plain http server with an equivalent hello handler, under the same taskset/wrk setup;
- host invocation overhead in-process (loadtests/bench_invoke.py);
- cold start (process start to the first 200) and worker RSS with 1 and 100 functions registered;
- deploy to first response, and the first request after a deploy and after a SIGHUP against steady p50;
- noisy neighbour: hello's latency while another function burns its whole time limit at 10 r/s;
- the module size of each example.

Each figure is the median of at least 3 runs. Results go to stdout, to docs/performance.md (between
the markers of --section) and to loadtests/results/<timestamp>.json. Nothing here is collected by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    BIN,
    BURN_WAT,
    EXAMPLES,
    HELLO_BODY,
    HELLO_MANIFEST,
    HERE,
    ROOT,
    HiveServer,
    RawClient,
    RefServer,
    build_examples,
    ensure_wrk,
    log,
    one_shot,
    rss_kib,
    run_wrk,
    tmpdir,
    tool_version,
    variant,
)

SERVER_CPU, CLIENT_CPU = "0", "1"
HELLO = "/api/v1/edge/hello"
DOC = ROOT / "docs" / "performance.md"


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def machine() -> dict[str, str]:
    import importlib.metadata as md

    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    pkgs = {p: md.version(p) for p in ("wasmtime", "uvicorn", "uvloop", "httptools", "gunicorn", "starlette")}
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "kernel": platform.release(),
        "python": platform.python_version(),
        **pkgs,
        "node": tool_version(["node", "--version"]),
        "wrk": tool_version(["wrk", "--version"]).split(" [")[0],
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "loadavg_at_start": Path("/proc/loadavg").read_text().split()[0],
    }


# --- measurements ---


def wrk_series(
    port: int, pids: list[int], conns: int, runs: int, seconds: float, cpus: str | None, threads: int = 1
) -> dict[str, Any]:
    run_wrk(port, conns=conns, seconds=min(2.0, seconds), cpus=cpus, threads=threads)  # warm-up
    rs = []
    for i in range(runs):
        r = run_wrk(port, conns=conns, seconds=seconds, cpus=cpus, threads=threads, server_pids=pids)
        bad = r["errors_status"] + r["errors_connect"] + r["errors_read"] + r["errors_write"] + r["errors_timeout"]
        if bad:
            log(f"  warning: {bad:.0f} errors in run {i + 1}: {r}")
        log(
            f"  c{conns} run {i + 1}: {r['rps']:.0f} req/s p50 {r['p50'] / 1000:.2f} ms p99 {r['p99'] / 1000:.2f} ms "
            f"p99.9 {r['p999'] / 1000:.2f} ms, {r['cpu_us_per_req']:.1f} us CPU/req"
        )
        rs.append(r)
    return {
        "runs": rs,
        **{k: med([r[k] for r in rs]) for k in ("rps", "p50", "p99", "p999", "cpu_us_per_req")},
        "errors": sum(r["errors_status"] + r["errors_connect"] + r["errors_read"] + r["errors_timeout"] for r in rs),
    }


def grants(wasm: bytes) -> list[str]:
    """The WASI groups a module's imports need (functions/hello-rust's hive.toml declares none, yet its
    module reads the clock)."""
    import wasmtime

    from hive.manifest import WASI_GROUPS

    names = {
        imp.name for imp in wasmtime.Module(wasmtime.Engine(), wasm).imports if imp.module == "wasi_snapshot_preview1"
    }
    return sorted(g for g, members in WASI_GROUPS.items() if names & members and g != "process")


def deploy_examples(server: HiveServer, built: dict[str, tuple[bytes | None, str]]) -> None:
    for name, (wasm, _) in built.items():
        if wasm is None:
            continue
        manifest = HELLO_MANIFEST if name == "hello" else json.dumps({"wasi": grants(wasm)})
        status, body, _ = server.deploy(name, wasm, manifest)
        if status != 201:
            raise RuntimeError(f"deploy {name}: {status} {body[:300]!r}")


def per_core(work: Path, built: dict, runs: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log("per core: edge-hive, 1 worker on CPU 0, wrk on CPU 1")
    with HiveServer(work / "percore" / "data", workers=1, cpus=SERVER_CPU).start() as srv:
        deploy_examples(srv, built)
        pids = srv.all_pids()
        for c in (1, 64):
            out[f"hive_c{c}"] = wrk_series(srv.port, pids, c, runs, seconds, CLIENT_CPU)
    for kind, what in (("node", "node http"), ("bare", "bare uvloop + httptools")):
        log(f"per core: {what}, on CPU 0, wrk on CPU 1")
        with RefServer(kind, cpus=SERVER_CPU).start() as ref:
            for c in (1, 64):
                out[f"{kind}_c{c}"] = wrk_series(ref.port, ref.all_pids(), c, runs, seconds, CLIENT_CPU)
    return out


def whole_machine(work: Path, built: dict, runs: int, seconds: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    log("whole machine: edge-hive, 2 workers, wrk -t2, nothing pinned")
    with HiveServer(work / "whole" / "data", workers=2).start() as srv:
        deploy_examples(srv, built)
        pids = srv.all_pids()
        for c in (1, 64):
            out[f"hive_c{c}"] = wrk_series(srv.port, pids, c, runs, seconds, None, threads=2)
        out.update(reload_figures(srv, built["hello"][0], runs))
    return out


def steady(port: int, path: str, n: int, fresh: bool) -> float:
    """Median latency (s) of n sequential invocations, each on a new connection or all on one."""
    xs = []
    if fresh:
        for _ in range(n):
            xs.append(one_shot(port, "POST", path, HELLO_BODY)[3])
    else:
        with RawClient(port) as c:
            for _ in range(n):
                status, _, _, dt = c.request("POST", path, HELLO_BODY)
                assert status == 200
                xs.append(dt)
    return med(xs)


def conns_per_worker(srv: HiveServer) -> dict[int, RawClient]:
    """A keep-alive connection to each worker (the kernel picks the worker: try until all are covered)."""
    got: dict[int, RawClient] = {}
    for _ in range(200):
        c = RawClient(srv.port)
        pid = json.loads(c.request("GET", "/healthz")[2])["pid"]
        if pid in got:
            c.close()
        else:
            got[pid] = c
        if len(got) == srv.workers:
            return got
    raise RuntimeError("could not reach every worker")


def settle(a: RawClient, b: RawClient, path: str) -> None:
    """The steady state on these very connections."""
    for c in (a, b):
        for _ in range(50):
            c.request("POST", path, HELLO_BODY)


def reload_figures(srv: HiveServer, hello: bytes, runs: int) -> dict[str, Any]:
    """Deploy -> first response; first request after a deploy and after a SIGHUP against steady p50,
    and against the same request after the same idle time with no deploy or reload (on this VM a
    request that finds its worker idle for tens of ms costs 0.4-0.9 ms, whatever the server does)."""
    log("deploy and reload figures (2 workers)")
    path = "/api/v1/edge/fresh"
    status, body, _ = srv.deploy("fresh", variant(hello, "base"))
    assert status == 201, body
    deploy_ms, to_first_ms, first_other, first_same, steady_ka, idle_other, idle_same = [], [], [], [], [], [], []
    for i in range(max(5, runs)):
        conns = conns_per_worker(srv)
        a, b = list(conns.values())[:2]

        settle(a, b, path)
        steady_ka.append(med([c.request("POST", path, HELLO_BODY)[3] for c in (a, b) for _ in range(100)]))
        t0 = time.perf_counter()
        status, body, dt = srv.deploy("fresh", variant(hello, f"run-{i}-{time.time()}"), client=a)
        assert status == 201, body
        # The first invocation on the worker that did not serve the deploy, then on the one that did.
        sb, _, _, lb = b.request("POST", path, HELLO_BODY)
        t_first = time.perf_counter()
        sa, _, _, la = a.request("POST", path, HELLO_BODY)
        assert sa == sb == 200
        deploy_ms.append(dt * 1000)
        to_first_ms.append((t_first - t0) * 1000)
        first_other.append(lb)
        first_same.append(la)
        # The control: the same connections idle for as long as the deploy took, and no deploy.
        settle(a, b, path)
        time.sleep(dt)
        idle_other.append(b.request("POST", path, HELLO_BODY)[3])
        idle_same.append(a.request("POST", path, HELLO_BODY)[3])
        for c in conns.values():
            c.close()
    out: dict[str, Any] = {
        "deploy_ms": med(deploy_ms),
        "deploy_to_first_ms": med(to_first_ms),
        "first_after_deploy_other_ms": med(first_other) * 1000,
        "first_after_deploy_same_ms": med(first_same) * 1000,
        "steady_keepalive_p50_ms": med(steady_ka) * 1000,
        "idle_other_ms": med(idle_other) * 1000,
        "idle_same_ms": med(idle_same) * 1000,
    }
    first_deploy = max(out["first_after_deploy_other_ms"], out["first_after_deploy_same_ms"])
    out["first_after_deploy_ratio"] = first_deploy / out["steady_keepalive_p50_ms"]
    out["first_after_deploy_idle_ratio"] = first_deploy / max(out["idle_other_ms"], out["idle_same_ms"])

    firsts, maxes, steady_fresh, idle_fresh = [], [], [], []
    for _ in range(max(5, runs)):
        steady_fresh.append(steady(srv.port, HELLO, 100, fresh=True))
        old = set(srv.worker_pids())
        t0 = time.perf_counter()
        os.kill(srv.pid, signal.SIGHUP)
        deadline = time.monotonic() + 60
        while True:  # until every worker is new (gunicorn starts the new ones before it stops the old)
            pids = set(srv.worker_pids())
            if len(pids) == srv.workers and not pids & old:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("SIGHUP did not replace the workers")
            time.sleep(0.005)
        # The new workers warmed every function before they accepted. The first invocations after the
        # reload, each on a new connection (the kernel spreads them over both new workers):
        gap = time.perf_counter() - t0
        lat = [one_shot(srv.port, "POST", HELLO, HELLO_BODY) for _ in range(10)]
        assert all(x[0] == 200 for x in lat), [x[:3] for x in lat]
        firsts.append(lat[0][3])
        maxes.append(max(x[3] for x in lat))
        srv.wait_ready()
        # The control: busy as before the reload, then idle as long as the reload took, then a new connection.
        steady(srv.port, HELLO, 20, fresh=True)
        time.sleep(gap)
        idle_fresh.append(one_shot(srv.port, "POST", HELLO, HELLO_BODY)[3])
    out.update(
        {
            "first_after_sighup_ms": med(firsts) * 1000,
            "first10_after_sighup_max_ms": med(maxes) * 1000,
            "steady_fresh_p50_ms": med(steady_fresh) * 1000,
            "idle_fresh_ms": med(idle_fresh) * 1000,
        }
    )
    out["first_after_sighup_ratio"] = out["first_after_sighup_ms"] / out["steady_fresh_p50_ms"]
    out["first_after_sighup_idle_ratio"] = out["first_after_sighup_ms"] / out["idle_fresh_ms"]
    log(f"  {out}")
    return out


def cold_start(work: Path, hello: bytes, runs: int) -> dict[str, Any]:
    """Process start to the first 200 for hello, and worker RSS, with 1 and 100 functions registered.
    One worker on CPU 0; this process polls from CPU 1."""
    out: dict[str, Any] = {}
    for n in (1, 100):
        log(f"cold start with {n} functions")
        data = work / f"cold{n}" / "data"
        with HiveServer(data, workers=1, cpus=SERVER_CPU).start() as srv:  # register the functions
            srv.deploy("hello", hello)
            for i in range(n - 1):
                status, body, _ = srv.deploy(f"fn{i:03d}", variant(hello, f"fn{i}"))
                assert status == 201, body
        times, rss, pss = [], [], []
        for _ in range(runs):
            srv = HiveServer(data, workers=1, cpus=SERVER_CPU)
            try:
                srv.start(wait=False)
                t0 = srv.started_at
                while True:
                    try:
                        status = one_shot(srv.port, "POST", HELLO, HELLO_BODY, timeout=30)[0]
                        if status == 200:
                            break
                    except OSError:
                        pass  # not listening yet
                    if time.perf_counter() - t0 > 60:
                        raise RuntimeError(f"no 200 within 60 s:\n{srv.log()[-2000:]}")
                    time.sleep(0.002)
                times.append(time.perf_counter() - t0)
                # Every function invoked once, then the worker's memory.
                with RawClient(srv.port) as c:
                    for i in range(n - 1):
                        c.request("POST", f"/api/v1/edge/fn{i:03d}", HELLO_BODY)
                    for _ in range(200):
                        c.request("POST", HELLO, HELLO_BODY)
                r, p = rss_kib(srv.worker_pids()[0])
                rss.append(r / 1024)
                pss.append(p / 1024)
            finally:
                srv.stop()
        out[f"cold_start_{n}_ms"] = med(times) * 1000
        out[f"rss_{n}_mib"] = med(rss)
        out[f"pss_{n}_mib"] = med(pss)
        log(
            f"  {n} functions: first 200 after {med(times) * 1000:.0f} ms, worker RSS {med(rss):.1f} MiB "
            f"(PSS {med(pss):.1f})"
        )
    return out


def noisy_neighbour(work: Path, hello: bytes, runs: int, seconds: float) -> dict[str, Any]:
    """hello's latency while `burn` runs into its 100 ms limit 10 times a second (1 worker on CPU 0)."""
    import wasmtime

    from hive.sandbox import GuestContext  # noqa: F401  (fails early without the package)

    out: dict[str, Any] = {}
    log("noisy neighbour: 1 worker on CPU 0; wrk and the burner on CPU 1")
    with HiveServer(work / "noisy" / "data", workers=1, cpus=SERVER_CPU).start() as srv:
        srv.deploy("hello", hello)
        status, body, _ = srv.deploy("burn", bytes(wasmtime.wat2wasm(BURN_WAT)), None)
        assert status == 201, body
        assert one_shot(srv.port, "POST", "/api/v1/edge/burn")[0] == 504  # it burns its whole limit
        for c in (1, 64):
            # The control: the same server and load, without the burner, right before.
            ctl = [
                run_wrk(srv.port, conns=c, seconds=seconds, cpus=CLIENT_CPU, server_pids=srv.all_pids())
                for _ in range(runs)
            ]
            log(
                f"  c{c} without the burner: p50 {med([r['p50'] for r in ctl]) / 1000:.2f} ms "
                f"p99 {med([r['p99'] for r in ctl]) / 1000:.2f} ms"
            )
            rs, burn_status = [], []
            for _ in range(runs):
                stop = threading.Event()

                def fire(burn_status: list[object] = burn_status) -> None:
                    try:
                        burn_status.append(one_shot(srv.port, "POST", "/api/v1/edge/burn", timeout=10)[0])
                    except OSError as e:
                        burn_status.append(type(e).__name__)

                def burner(stop: threading.Event = stop, fire: object = fire) -> None:
                    nxt = time.monotonic()
                    while not stop.is_set():
                        threading.Thread(target=fire, daemon=True).start()  # type: ignore[arg-type]
                        nxt += 0.1  # 10 r/s
                        stop.wait(max(0.0, nxt - time.monotonic()))

                t = threading.Thread(target=burner, daemon=True)
                t.start()
                time.sleep(0.3)
                try:
                    r = run_wrk(srv.port, conns=c, seconds=seconds, cpus=CLIENT_CPU, server_pids=srv.all_pids())
                finally:
                    stop.set()
                    t.join()
                log(
                    f"  c{c}: hello {r['rps']:.0f} req/s p50 {r['p50'] / 1000:.2f} ms p99 {r['p99'] / 1000:.2f} ms "
                    f"p99.9 {r['p999'] / 1000:.2f} ms"
                )
                rs.append(r)
                time.sleep(0.3)
            out[f"c{c}"] = {
                "runs": rs,
                **{k: med([r[k] for r in rs]) for k in ("rps", "p50", "p99", "p999")},
                "burn_statuses": {str(s): burn_status.count(s) for s in set(burn_status)},
                "control": {k: med([r[k] for r in ctl]) for k in ("rps", "p50", "p99", "p999")},
            }
    return out


def module_sizes(built: dict[str, tuple[bytes | None, str]]) -> dict[str, Any]:
    return {name: {"bytes": len(w) if w else None, "note": note} for name, (w, note) in built.items()}


# --- report ---


def ms(us: float) -> str:
    return f"{us / 1000:.2f}"


def render(res: dict[str, Any], argv: list[str]) -> str:
    m = res["machine"]
    pc, wm, nn, cs = (res.get(k) for k in ("per_core", "whole", "noisy", "cold"))
    L = []
    L.append(
        f"Run {m['date']} with `{' '.join(argv)}` ({res['runs']} runs of {res['seconds']:g} s per wrk figure; "
        "each figure is the median of the runs)."
    )
    L.append("")
    L.append(
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), Linux {m['kernel']}, Python {m['python']}, "
        f"wasmtime-py {m['wasmtime']}, uvicorn {m['uvicorn']}, uvloop {m['uvloop']}, httptools {m['httptools']}, "
        f"gunicorn {m['gunicorn']}, starlette {m['starlette']}, Node {m['node']}, {m['wrk']}. "
        f"1-minute load average before the run: {m['loadavg_at_start']} (the machine is shared: latency and "
        "req/s move with the other load; CPU time per request does not)."
    )
    if pc or wm:
        L.append("")
        L.append("| hello, POST /api/v1/edge/hello | conns | req/s | p50 ms | p99 ms | p99.9 ms | server CPU µs/req |")
        L.append("|---|---:|---:|---:|---:|---:|---:|")
        rows = [
            ("edge-hive, 1 worker (CPU 0), wrk on CPU 1", pc, "hive"),
            ("node http (CPU 0), wrk on CPU 1", pc, "node"),
            ("bare uvloop + httptools, Python, no WebAssembly (CPU 0), wrk on CPU 1", pc, "bare"),
            ("edge-hive, 2 workers, whole machine", wm, "hive"),
        ]
        for label, block, key in rows:
            for c in (1, 64):
                r = (block or {}).get(f"{key}_c{c}")
                if r:
                    L.append(
                        f"| {label} | {c} | {r['rps']:.0f} | {ms(r['p50'])} | {ms(r['p99'])} | {ms(r['p999'])} | "
                        f"{r['cpu_us_per_req']:.1f} |"
                    )
    if pc:
        ratio = pc["hive_c64"]["cpu_us_per_req"] / pc["node_c64"]["cpu_us_per_req"]
        L.append("")
        L.append(
            f"Server CPU per request at c64, edge-hive ÷ node: **{ratio:.2f}** "
            f"({pc['hive_c64']['cpu_us_per_req']:.1f} µs vs {pc['node_c64']['cpu_us_per_req']:.1f} µs)."
        )
        if "bare_c64" in pc:
            L.append(
                f"The Python floor (bare uvloop + httptools, no WebAssembly) ÷ node: "
                f"**{pc['bare_c64']['cpu_us_per_req'] / pc['node_c64']['cpu_us_per_req']:.2f}**; "
                f"edge-hive ÷ the Python floor: "
                f"**{pc['hive_c64']['cpu_us_per_req'] / pc['bare_c64']['cpu_us_per_req']:.2f}**."
            )
    L.append("")
    L.append("| figure | value |")
    L.append("|---|---:|")
    if "invoke" in res:
        L.append(
            f"| host invocation overhead, hello, in-process (encode → call → decode), median | "
            f"{res['invoke']['median_us']:.1f} µs |"
        )
    if cs:
        L.append(f"| cold start, process start → first 200, 1 function | {cs['cold_start_1_ms']:.0f} ms |")
        L.append(f"| cold start, process start → first 200, 100 functions | {cs['cold_start_100_ms']:.0f} ms |")
        L.append(f"| worker RSS, 1 function warm (PSS) | {cs['rss_1_mib']:.1f} MiB ({cs['pss_1_mib']:.1f}) |")
        L.append(f"| worker RSS, 100 functions warm (PSS) | {cs['rss_100_mib']:.1f} MiB ({cs['pss_100_mib']:.1f}) |")
        per_fn = (cs["rss_100_mib"] - cs["rss_1_mib"]) / 99
        L.append(f"| worker RSS per extra function | {per_fn * 1024:.0f} KiB |")
    if wm and "deploy_ms" in wm:
        L.append(f"| deploy request (upload, compile, commit), 2 workers | {wm['deploy_ms']:.1f} ms |")
        L.append(
            f"| deploy start → first 200 of the new version on the other worker | {wm['deploy_to_first_ms']:.1f} ms |"
        )
        L.append(
            f"| first request after a deploy, other worker / same worker (keep-alive) | "
            f"{wm['first_after_deploy_other_ms']:.2f} / {wm['first_after_deploy_same_ms']:.2f} ms |"
        )
        L.append(f"| steady p50 on the same keep-alive connections | {wm['steady_keepalive_p50_ms']:.2f} ms |")
        L.append(f"| first request after a deploy ÷ steady p50 | {wm['first_after_deploy_ratio']:.2f}× |")
        if "idle_same_ms" in wm:
            L.append(
                f"| control: the same connections idle as long as the deploy took, no deploy (other / same) | "
                f"{wm['idle_other_ms']:.2f} / {wm['idle_same_ms']:.2f} ms |"
            )
            L.append(f"| first request after a deploy ÷ that control | {wm['first_after_deploy_idle_ratio']:.2f}× |")
        L.append(
            f"| first request after a SIGHUP (new connection) / max of the first 10 | "
            f"{wm['first_after_sighup_ms']:.2f} / {wm['first10_after_sighup_max_ms']:.2f} ms |"
        )
        L.append(f"| steady p50, a new connection per request | {wm['steady_fresh_p50_ms']:.2f} ms |")
        L.append(f"| first request after a SIGHUP ÷ steady p50 | {wm['first_after_sighup_ratio']:.2f}× |")
        if "idle_fresh_ms" in wm:
            L.append(
                f"| control: a new connection after the same idle time, no reload | {wm['idle_fresh_ms']:.2f} ms |"
            )
            L.append(f"| first request after a SIGHUP ÷ that control | {wm['first_after_sighup_idle_ratio']:.2f}× |")
    for c in (1, 64):
        r = (nn or {}).get(f"c{c}")
        if r:
            L.append(
                f"| noisy neighbour, c{c}: hello p50 / p99 / p99.9 while `burn` hits its 100 ms limit at 10 r/s | "
                f"{ms(r['p50'])} / {ms(r['p99'])} / {ms(r['p999'])} ms ({r['rps']:.0f} req/s; burn: "
                f"{', '.join(f'{k}×{v}' for k, v in sorted(r['burn_statuses'].items()))}) |"
            )
            if "control" in r:
                k = r["control"]
                L.append(
                    f"| the same without `burn` (control, same server, just before) | "
                    f"{ms(k['p50'])} / {ms(k['p99'])} / {ms(k['p999'])} ms ({k['rps']:.0f} req/s) |"
                )
    if "sizes" in res:
        L.append("")
        L.append("| example | module size |")
        L.append("|---|---:|")
        for name, sz in res["sizes"].items():
            L.append(
                f"| functions/{name} | {sz['bytes']:,} bytes |"
                if sz["bytes"]
                else f"| functions/{name} | {sz['note']} |"
            )
    return "\n".join(L)


def write_doc(section: str, text: str) -> None:
    begin, end = f"<!-- bench:{section}:begin -->", f"<!-- bench:{section}:end -->"
    doc = DOC.read_text() if DOC.exists() else "# Performance\n"
    block = f"{begin}\n{text}\n{end}"
    if begin in doc and end in doc:
        head, rest = doc.split(begin, 1)
        doc = head + block + rest.split(end, 1)[1]
    else:
        doc = doc.rstrip("\n") + f"\n\n{block}\n"
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(doc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 runs of 3 s per wrk figure (default: 3 runs of 8 s)")
    ap.add_argument("--runs", type=int, help="runs per figure (at least 3)")
    ap.add_argument("--seconds", type=float, help="seconds per wrk run")
    ap.add_argument("--section", default="after", help="the block of docs/performance.md to (re)write")
    ap.add_argument("--no-doc", action="store_true", help="do not touch docs/performance.md")
    ap.add_argument("--only", help="comma-separated subset of: invoke,percore,whole,cold,noisy (implies --no-doc)")
    args = ap.parse_args()
    runs = max(3, args.runs or 3)
    seconds = args.seconds or (3.0 if args.quick else 8.0)
    if (os.cpu_count() or 1) < 2:
        sys.exit("the harness pins the server and wrk to different CPUs: it needs at least 2")
    ensure_wrk()
    if not shutil.which("node"):
        sys.exit("the harness compares with Node's http server: install node")
    os.sched_setaffinity(0, {int(CLIENT_CPU)})  # this process polls and times from the client CPU
    started = time.monotonic()
    work = tmpdir("hive-loadtest-")
    try:
        only = set(args.only.split(",")) if args.only else {"invoke", "percore", "whole", "cold", "noisy"}
        res: dict[str, Any] = {"machine": machine(), "runs": runs, "seconds": seconds}
        built = build_examples(work, EXAMPLES if not args.only else ["hello"])
        hello = built["hello"][0]
        assert hello is not None, built["hello"][1]
        if not args.only:
            res["sizes"] = module_sizes(built)
        if "invoke" in only:
            log("host invocation overhead (loadtests/bench_invoke.py, CPU 0)")
            out = subprocess.run(
                [
                    "taskset",
                    "-c",
                    SERVER_CPU,
                    str(BIN / "python"),
                    str(HERE / "bench_invoke.py"),
                    "--runs",
                    str(runs),
                    "--json",
                    "--calls",
                    "10000" if args.quick else "20000",
                ],
                capture_output=True,
                text=True,
                check=True,
            )
            res["invoke"] = json.loads(out.stdout.split("BENCH ", 1)[1])
            log(f"  median {res['invoke']['median_us']:.1f} us")
        if "percore" in only:
            res["per_core"] = per_core(work, built, runs, seconds)
        if "whole" in only:
            res["whole"] = whole_machine(work, built, runs, seconds)
        if "cold" in only:
            res["cold"] = cold_start(work, hello, runs)
        if "noisy" in only:
            res["noisy"] = noisy_neighbour(work, hello, runs, seconds)
        argv = [".venv/bin/python", "loadtests/run.py", *sys.argv[1:]]
        text = render(res, argv)
        res["elapsed_s"] = time.monotonic() - started
        print(text)
        print(f"\n(harness took {res['elapsed_s']:.0f} s)")
        results = HERE / "results"
        results.mkdir(exist_ok=True)
        (results / time.strftime("%Y%m%d-%H%M%S.json")).write_text(json.dumps(res, indent=1, default=str))
        if not args.no_doc and not args.only:
            write_doc(args.section, text)
            log(f"wrote {DOC.relative_to(ROOT)} (section {args.section})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
