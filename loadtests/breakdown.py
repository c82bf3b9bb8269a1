"""What each part of a hello request costs inside one process: the invocation core's stages timed one by
one on a real Hive (LMDB registry, wasmtime, Prometheus multiprocess files and the function log in a
temp dir), plus the HTTP layer's pieces (httptools parsing the request wrk sends, the response write to a
socket).

    .venv/bin/python loadtests/breakdown.py [--calls 20000] [--runs 5]

Each stage runs `calls` times per run; the median over runs is printed in µs per request, with the
stages' sum. The server's own figure under wrk (loadtests/compare.py) minus that sum is what the
protocol glue (uvicorn's HttpToolsProtocol and workers/fastpath.py) and the event loop cost. Not
collected by pytest; no test asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REQUEST = (
    b"POST /api/v1/edge/hello HTTP/1.1\r\nHost: 127.0.0.1:8443\r\nContent-Type: application/json\r\n"
    b"Content-Length: 21\r\n\r\n" + b'{"name": "Edge Hive"}'
)


def timed(fn: Callable[[], object], calls: int, runs: int) -> float:
    for _ in range(min(calls, 2000)):
        fn()
    medians = []
    for _ in range(runs):
        t0 = time.thread_time_ns()  # CPU time: a busy neighbour on this shared machine weighs less
        for _ in range(calls):
            fn()
        medians.append((time.thread_time_ns() - t0) / calls / 1000)
    return statistics.median(medians)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="hive-breakdown-"))
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(work / "metrics")
    (work / "metrics").mkdir()
    os.environ["HIVE_DATA_DIR"] = str(work / "data")
    os.environ["HIVE_ADMIN_TOKEN"] = "breakdown-" + "x" * 32
    try:
        run(work, args.calls, args.runs)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, calls: int, runs: int) -> None:
    import httptools

    from hive import abi, service
    from hive.build import build_function
    from hive.manifest import parse_manifest
    from hive.render import guest_reply
    from hive.routes import invoke_target
    from hive.sandbox import fastcall
    from hive.settings import load_settings

    fastcall.install()  # before any linker, as a worker does (older trees need it done here)

    folder = work / "hello"
    shutil.copytree(ROOT / "functions" / "hello", folder, ignore=shutil.ignore_patterns("*.wasm"))
    wasm = build_function(folder).read_bytes()
    hive = service.open_hive(load_settings())
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(service.deploy(hive, "hello", wasm, parse_manifest(None)))
    invoker, runtime, telemetry = hive.invoker, hive.runtime, hive.telemetry
    runtime.sync()
    loaded = runtime.lookup("hello")
    headers = [(b"host", b"127.0.0.1:8443"), (b"content-type", b"application/json"), (b"content-length", b"21")]
    body = b'{"name": "Edge Hive"}'
    envelope = abi.encode_request(b"POST", b"/api/v1/edge/hello", b"", headers, body)
    inst = loaded.idle[-1]

    class Callbacks:  # what uvicorn's protocol collects (url, headers), without the rest of it
        def __init__(self) -> None:
            self.url = b""
            self.headers: list[tuple[bytes, bytes]] = []

        def on_url(self, url: bytes) -> None:
            self.url += url

        def on_header(self, name: bytes, value: bytes) -> None:
            self.headers.append((name.lower(), value))

        def on_body(self, data: bytes) -> None:
            pass

    cb = Callbacks()
    parser = httptools.HttpRequestParser(cb)

    def parse() -> None:
        cb.url, cb.headers = b"", []
        parser.feed_data(REQUEST)

    resp = inst.call(envelope)
    raw_response = abi.encode_response(resp)
    reply = guest_reply(resp)
    a, b = socket.socketpair()
    b.setblocking(False)
    out = b"HTTP/1.1 200 OK\r\n" + b"".join(k + b": " + v + b"\r\n" for k, v in reply.headers) + b"\r\n" + reply.body

    def write() -> None:
        a.send(out)
        b.recv(65536)

    def render() -> None:
        r = guest_reply(resp)
        parts = [b"HTTP/1.1 200 OK\r\n"]
        for name, value in r.headers:
            parts += (name, b": ", value, b"\r\n")
        parts.append(b"\r\n")
        parts.append(r.body)
        b"".join(parts)

    def telemetry_call() -> None:
        telemetry.invocation("hello", 1, 200, time.perf_counter_ns(), "0123456789abcdef")

    stages: dict[str, Callable[[], object]] = {
        "HTTP parse (httptools, uvicorn's callbacks)": parse,
        "routing (invoke_target)": lambda: invoke_target(b"POST", b"/api/v1/edge/hello"),
        "admission (Invoker.begin: head, id, version, auth, rate)": lambda: invoker.begin(
            "hello", b"POST", b"/api/v1/edge/hello", b"", headers
        ),
        "encode the request envelope": lambda: abi.encode_request(b"POST", b"/api/v1/edge/hello", b"", headers, body),
        "guest call incl. decode (GuestInstance.call)": lambda: inst.call(envelope),
        "  the same through Runtime.invoke (instance pool)": lambda: runtime.invoke(
            loaded, envelope, "0123456789abcdef"
        ),
        "  the same through Invoker.call (+ headers, encode, telemetry)": lambda: invoker.call(
            loaded, b"POST", b"/api/v1/edge/hello", b"", headers, body, "0123456789abcdef"
        ),
        "render the response bytes": render,
        "metrics and log line (Telemetry.invocation)": telemetry_call,
        "response write + read back (socketpair send/recv)": write,
        "decode the response envelope": lambda: abi.decode_response(raw_response, 1 << 20),
    }
    line = b'{"ts":"2026-12-01T23:36:24.123Z","kind":"invocation","function":"hello","version":1,"status":200}\n'
    log_fd = os.open(work / "data" / "logs" / "functions.jsonl", os.O_WRONLY | os.O_APPEND)
    stages["one function-log write() (what batching saves per request)"] = lambda: os.write(log_fd, line)
    stages["the thread CPU clock read (offload policy)"] = time.thread_time_ns

    async def measure() -> None:  # on a running loop, as in a worker: log lines are batched
        results = {}
        for label, fn in stages.items():
            results[label] = timed(fn, calls, runs)
            telemetry.flush()
            print(f"{results[label]:7.2f} us  {label}", flush=True)
        core = sum(v for k, v in results.items() if not k.startswith(("decode", "one ", "the thread", "  ")))
        print(f"{core:7.2f} us  sum of the request's stages (decode is inside the guest call)")
        whole = timed(lambda: _whole(invoker), calls, runs)
        telemetry.flush()
        print(f"{whole:7.2f} us  the core end to end (begin, feed, finish: encode, call, telemetry, render)")

    loop.run_until_complete(measure())
    os.close(log_fd)
    a.close()
    b.close()
    loop.run_until_complete(hive.aclose())
    loop.close()


def _whole(invoker: object) -> None:
    inv = invoker.begin(  # type: ignore[attr-defined]
        "hello",
        b"POST",
        b"/api/v1/edge/hello",
        b"",
        [(b"host", b"127.0.0.1:8443"), (b"content-type", b"application/json"), (b"content-length", b"21")],
    )
    inv.feed(b'{"name": "Edge Hive"}')
    inv.finish()


if __name__ == "__main__":
    main()
