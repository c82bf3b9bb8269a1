"""The `edge-hive dev` loop: from saving a C function to its new answer, over N edits.

    .venv/bin/python loadtests/dev_loop.py          # 10 edits
    .venv/bin/python loadtests/dev_loop.py -n 30

Runs `edge-hive dev` on a temp copy of functions/hello (C, the pip zig toolchain) on a free port of
127.0.0.1, changes the greeting in hello.c N times, and after each save polls the function until it
answers with the new greeting. Prints each latency, the median, and the median build and deploy parts
that edge-hive dev reports. Stops the dev process (and so its server) with SIGINT. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import BIN, ROOT, free_port, log  # noqa: E402

GREETING = re.compile(r'(\\"message\\":\\")([A-Za-z0-9 ]+)(, ")')  # hello.c's hive_cat("...Hello, ", name, ...)
SERVING = re.compile(r"^\[hello\] v(\d+) serving in (\d+) ms \(build (\d+), deploy (\d+)\)$", re.MULTILINE)


def answer(url: str) -> str | None:
    try:
        r = httpx.post(url, json={"name": "dev"}, timeout=5)
    except httpx.HTTPError:
        return None
    return r.json().get("message") if r.status_code == 200 else None


def wait(what: str, cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.005)  # polling interval


def save_to_answer(src: Path, url: str, greeting: str) -> float:
    text = GREETING.sub(lambda m: m.group(1) + greeting + m.group(3), src.read_text())
    t0 = time.monotonic()
    src.write_text(text)
    wait(repr(greeting), lambda: answer(url) == f"{greeting}, dev!", 60)
    return time.monotonic() - t0


def reported(lines: list[str]) -> set[int]:
    return {int(m.group(1)) for m in SERVING.finditer("".join(lines))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=10, help="edits to measure")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="hive-dev-loop-"))
    shutil.copytree(ROOT / "functions" / "hello", work / "functions" / "hello", ignore=shutil.ignore_patterns("*.wasm"))
    src = work / "functions" / "hello" / "hello.c"
    port = free_port()
    url = f"http://127.0.0.1:{port}/api/v1/edge/hello"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    proc = subprocess.Popen(
        [str(BIN / "edge-hive"), "dev", "--port", str(port)],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        text=True,
    )
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout or ()), daemon=True)
    reader.start()
    latencies: list[float] = []
    try:
        wait("edge-hive dev to deploy hello", lambda: answer(url) == "Hello, dev!", 300)
        log(f"edge-hive dev serving hello on port {port}; {args.n} edits")
        for i in range(args.n):
            latencies.append(save_to_answer(src, url, f"Edit {i}"))
            log(f"edit {i}: {latencies[-1] * 1000:.0f} ms")
            version = i + 2  # v1 was the first deploy
            wait(f"the report of v{version}", lambda v=version: v in reported(lines), 10)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        reader.join(timeout=5)
        shutil.rmtree(work, ignore_errors=True)
    reports = [m for m in SERVING.finditer("".join(lines)) if int(m.group(1)) >= 2]
    print(
        f"save to new answer, C hello, {len(latencies)} edits: median {statistics.median(latencies) * 1000:.0f} ms, "
        f"min {min(latencies) * 1000:.0f}, max {max(latencies) * 1000:.0f}"
    )
    if reports:
        print(
            f"  as edge-hive dev reports it (change seen to deployed): median build "
            f"{statistics.median(int(m.group(3)) for m in reports)} ms, "
            f"deploy {statistics.median(int(m.group(4)) for m in reports)} ms"
        )
    print(f"  edge-hive dev exited with {proc.returncode}")


if __name__ == "__main__":
    main()
