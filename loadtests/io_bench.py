"""Outbound fetch under load, side by side in one run (not collected by pytest; no test asserts a time).

    .venv/bin/python loadtests/io_bench.py [--rounds 3] [--seconds 6] [--before /tmp/before]

1. A proxy (fetch a local upstream, answer its body): Edge Hive's loadtests/proxy (C, hive_fetch) against
   Node doing the same with fetch() (loadtests/node_proxy.js). Each server alone on CPU 0, wrk and the
   upstream (loadtests/node_upstream.js) on CPU 1, c64: server CPU per request and req/s, interleaved.
2. 256 invocations at once of a function whose upstream answers after 200 ms, on one worker: the time
   until all 256 have answered.
3. hello's latency on that worker while those bursts run, against the same wrk load without them (p50,
   p99 and the ratio); and, as a control, beside the same bursts sent straight to the upstream (the
   load generators' own share of CPU 1, which wrk shares on this 2-core machine: Edge Hive does
   nothing for them).

--before TREE: a checkout of an earlier revision (`git worktree add --detach /tmp/before REV`), served
with PYTHONPATH=TREE beside this tree's server and measured in the same rounds, interleaved. The load
generators (wrk, the upstream, the bursts' client: this process) all run on CPU 1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import HERE, HiveServer, ensure_wrk, free_port, log, run_wrk, taskset, tmpdir  # noqa: E402


def node(script: str, cpus: str, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*taskset(cpus), "node", str(HERE / script), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_port(port: int) -> None:
    import socket

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()


async def burst(port: int, path: str, n: int) -> tuple[float, list[int]]:
    async def one() -> int:
        r, w = await asyncio.open_connection("127.0.0.1", port)
        w.write(f"GET {path} HTTP/1.1\r\nhost: b\r\nconnection: close\r\n\r\n".encode())
        data = await r.read()
        w.close()
        return int(data.split(b" ", 2)[1])

    t = time.monotonic()
    statuses = await asyncio.gather(*[one() for _ in range(n)])
    return time.monotonic() - t, list(statuses)


def build_proxy(work: Path) -> bytes:
    from hive.build import build_function

    dest = work / "proxy"
    shutil.copytree(HERE / "proxy", dest, ignore=shutil.ignore_patterns("*.wasm"))
    return build_function(dest).read_bytes()


def build_hello(work: Path) -> bytes:
    from hive.build import build_function

    dest = work / "hello"
    shutil.copytree(HERE.parent / "functions" / "hello", dest, ignore=shutil.ignore_patterns("*.wasm"))
    return build_function(dest).read_bytes()


def burst_loop(
    port: int, stop_at: threading.Event, out: list[tuple[float, int]], path: str = "/api/v1/edge/slow"
) -> None:
    """Bursts of 256 slow invocations back to back until told to stop: (seconds, non-200 count) each."""
    while not stop_at.is_set():
        took, statuses = asyncio.run(burst(port, path, 256))
        out.append((took, sum(s != 200 for s in statuses)))


def hello_beside(
    port: int, seconds: float, burst_port: int, burst_path: str, out: list[tuple[float, int]]
) -> dict[str, float]:
    """hello at c16 on `port` while bursts of 256 go to burst_port/burst_path back to back."""
    done = threading.Event()
    t = threading.Thread(target=burst_loop, args=(burst_port, done, out, burst_path))
    t.start()
    try:
        return run_wrk(port, conns=16, seconds=seconds, cpus="1", path="/api/v1/edge/hello")
    finally:
        done.set()
        t.join(60)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=6)
    ap.add_argument("--before", type=Path, help="a checkout of the earlier revision, measured beside this one")
    args = ap.parse_args()
    ensure_wrk()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {1})  # this process makes the bursts: a load generator, off the server's core
    work = tmpdir("hive-io-")
    proxy_wasm, hello_wasm = build_proxy(work), build_hello(work)
    up_port = free_port()
    upstream = node("node_upstream.js", "1", str(up_port))
    wait_port(up_port)
    up = f"http://127.0.0.1:{up_port}"
    trees = {"edge-hive": HERE.parent}
    if args.before is not None:
        trees = {"before": args.before.resolve(), **trees}
    out: dict[str, object] = {"trees": {k: str(v) for k, v in trees.items()}}
    servers: dict[str, HiveServer] = {}
    extra: list[subprocess.Popen[bytes]] = []
    manifest = {"allowed_hosts": [up], "config": {"UPSTREAM": f"{up}/rates"}, "limits": {"max_concurrency": 256}}
    slow = {
        **manifest,
        "config": {"UPSTREAM": f"{up}/rates?ms=200"},
        "limits": {"max_concurrency": 256, "max_queue": 256},
    }
    try:
        for name, tree in trees.items():
            srv = HiveServer(work / f"data-{name}", workers=1, cpus="0", env={"PYTHONPATH": str(tree)}).start()
            servers[name] = srv
            status, body, _ = srv.deploy("proxy", proxy_wasm, json.dumps(manifest))
            assert status == 201, body
            assert srv.deploy("slow", proxy_wasm, json.dumps(slow))[0] == 201
            assert srv.deploy("hello", hello_wasm, None)[0] == 201

        # 1. proxy against Node
        np_port = free_port()
        nodeproxy = node("node_proxy.js", "0", str(np_port), f"{up}/rates")
        extra.append(nodeproxy)
        wait_port(np_port)
        targets = {name: (srv.port, "/api/v1/edge/proxy", srv.all_pids()) for name, srv in servers.items()}
        targets["node"] = (np_port, "/", [nodeproxy.pid])
        cpu: dict[str, list[float]] = {k: [] for k in targets}
        rps: dict[str, list[float]] = {k: [] for k in targets}
        for port, path, _ in targets.values():
            run_wrk(port, conns=64, seconds=1, cpus="1", path=path)
        for r in range(args.rounds):
            for name in list(targets) if r % 2 == 0 else list(reversed(targets)):
                port, path, pids = targets[name]
                res = run_wrk(port, conns=64, seconds=args.seconds, cpus="1", path=path, server_pids=pids)
                cpu[name].append(res["cpu_us_per_req"])
                rps[name].append(res["rps"])
                log(
                    f"proxy round {r + 1} {name}: {res['cpu_us_per_req']:.1f} us/req {res['rps']:.0f} req/s "
                    f"non-2xx {res.get('errors_status', 0)}"
                )
        stop(nodeproxy)
        out["proxy_cpu_us_per_req"] = {k: statistics.median(v) for k, v in cpu.items()}
        out["proxy_rps"] = {k: statistics.median(v) for k, v in rps.items()}

        # 2. 256 slow invocations at once
        slow_ms: dict[str, list[float]] = {k: [] for k in servers}
        failed: dict[str, int] = {k: 0 for k in servers}
        for r in range(args.rounds):
            for name in list(servers) if r % 2 == 0 else list(reversed(servers)):
                if r == 0:  # a first burst warms the instances, the threads and the connection pool
                    asyncio.run(burst(servers[name].port, "/api/v1/edge/slow", 256))
                took, statuses = asyncio.run(burst(servers[name].port, "/api/v1/edge/slow", 256))
                bad = sum(s != 200 for s in statuses)
                failed[name] += bad
                slow_ms[name].append(took * 1000)
                log(f"{name}: 256 x 200 ms upstream: all answered in {took * 1000:.0f} ms ({bad} not 200)")
        out["slow_256_ms"] = {k: statistics.median(v) for k, v in slow_ms.items()}
        out["slow_256_not_200"] = failed

        # 3. hello's latency with and without those bursts on the same worker
        quiet: dict[str, list[dict[str, float]]] = {k: [] for k in servers}
        loud: dict[str, list[dict[str, float]]] = {k: [] for k in servers}
        control: dict[str, list[dict[str, float]]] = {k: [] for k in servers}
        during: dict[str, list[tuple[float, int]]] = {k: [] for k in servers}
        for r in range(args.rounds):
            for name in list(servers) if r % 2 == 0 else list(reversed(servers)):
                port = servers[name].port
                quiet[name].append(run_wrk(port, conns=16, seconds=args.seconds, cpus="1", path="/api/v1/edge/hello"))
                loud[name].append(hello_beside(port, args.seconds, port, "/api/v1/edge/slow", during[name]))
                # the control: the same bursts straight to the upstream
                control[name].append(hello_beside(port, args.seconds, up_port, "/rates?ms=200", []))
                q, ld, c = quiet[name][-1], loud[name][-1], control[name][-1]
                log(
                    f"{name} hello p99 alone {q['p99'] / 1000:.1f} ms, beside the bursts {ld['p99'] / 1000:.1f} ms "
                    f"({ld['p99'] / q['p99']:.2f}x), beside bursts to the upstream only {c['p99'] / 1000:.1f} ms "
                    f"({c['p99'] / q['p99']:.2f}x); p50 {q['p50'] / 1000:.1f} / {ld['p50'] / 1000:.1f} ms"
                )
        p99: dict[str, dict[str, float]] = {}
        p50: dict[str, dict[str, float]] = {}
        beside: dict[str, dict[str, float | None]] = {}
        for name in servers:
            p99q = statistics.median(r["p99"] / 1000 for r in quiet[name])
            p99l = statistics.median(r["p99"] / 1000 for r in loud[name])
            p99c = statistics.median(r["p99"] / 1000 for r in control[name])
            rounds = sorted(ld["p99"] / q["p99"] for q, ld in zip(quiet[name], loud[name], strict=True))
            p99[name] = {
                "alone": p99q,
                "with_slow_bursts": p99l,
                "ratio": p99l / p99q,
                "ratio_median_of_rounds": statistics.median(rounds),  # one noisy round moves it less
                "beside_bursts_to_the_upstream_only": p99c,
                "control_ratio": p99c / p99q,
            }
            p50[name] = {
                "alone": statistics.median(r["p50"] / 1000 for r in quiet[name]),
                "with_slow_bursts": statistics.median(r["p50"] / 1000 for r in loud[name]),
            }
            times = [t * 1000 for t, _ in during[name]]
            beside[name] = {
                "count": len(times),
                "median_ms": statistics.median(times) if times else None,
                "not_200": sum(b for _, b in during[name]),
            }
        out["hello_p99_ms"], out["hello_p50_ms"], out["bursts_beside_hello"] = p99, p50, beside
    finally:
        for s in servers.values():
            s.stop()
        for p in extra:
            stop(p)
        stop(upstream)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
