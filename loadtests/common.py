"""Helpers for the load-test harness (loadtests/run.py): servers, wrk, /proc accounting, a raw HTTP client.

Everything here talks to 127.0.0.1 only and stops only the processes it started (by PID / process group).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
ADMIN_TOKEN = "bench-admin-token"
CLK_TCK = os.sysconf("SC_CLK_TCK")
HELLO_BODY = b'{"name": "Edge Hive"}'
HELLO_MANIFEST = json.dumps({"wasi": ["clocks"]})
EXAMPLES = ("hello", "hello-rust", "hello-zig", "hello-as", "auth", "webhook")

# An ABI v1 guest that spins until its time limit stops it (the noisy neighbour).
BURN_WAT = r"""
(module
  (memory (export "memory") 1)
  (func (export "hive_abi_v1"))
  (func (export "hive_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "hive_handle") (param i32 i32) (result i64)
    (loop $l (br $l))
    (i64.const 0)))
"""


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- tools ---


def ensure_wrk() -> str:
    """wrk from Debian (`apt-get install -y wrk`); installed here when running as root."""
    path = shutil.which("wrk")
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        log("wrk not found: apt-get install -y wrk")
        subprocess.run(["apt-get", "update", "-qq"], check=False, stdout=subprocess.DEVNULL)
        subprocess.run(["apt-get", "install", "-y", "-qq", "wrk"], check=True, stdout=subprocess.DEVNULL)
        path = shutil.which("wrk")
        if path:
            return path
    sys.exit("the harness needs wrk: install it with `apt-get install -y wrk` (Debian package `wrk`)")


def tool_version(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.TimeoutExpired, IndexError):
        return "not found"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def taskset(cpus: str | None) -> list[str]:
    return ["taskset", "-c", cpus] if cpus else []


# --- modules ---


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def variant(wasm: bytes, tag: str) -> bytes:
    """The same module with a custom section appended: a distinct sha256, the same code."""
    name = b"hive-bench"
    payload = _leb(len(name)) + name + tag.encode()
    return wasm + b"\x00" + _leb(len(payload)) + payload


def build_examples(work: Path, names: Iterable[str] = EXAMPLES) -> dict[str, tuple[bytes | None, str]]:
    """Each example built from a clean copy with hive.build.build_function: name -> (wasm or None, note)."""
    from hive.build import build_function

    out: dict[str, tuple[bytes | None, str]] = {}
    for name in names:
        dest = work / "build" / name
        shutil.copytree(
            ROOT / "functions" / name,
            dest,
            ignore=shutil.ignore_patterns("*.wasm", "target", "node_modules", ".zig-cache"),
        )
        t = time.monotonic()
        try:
            wasm = build_function(dest).read_bytes()
            out[name] = (wasm, f"built in {time.monotonic() - t:.1f} s")
        except Exception as e:  # a missing toolchain: report it, measure the rest
            out[name] = (None, f"not built: {type(e).__name__}: {str(e).splitlines()[0][:120]}")
        log(f"build {name}: {out[name][1]}")
    return out


# --- /proc accounting ---


def cpu_seconds(pids: Iterable[int]) -> float:
    """utime + stime of each process (all its threads), in seconds."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
    return total / CLK_TCK


def rss_kib(pid: int) -> tuple[int, int]:
    """(VmRSS, Pss) in KiB."""
    rss = pss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                pss = int(line.split()[1])
    except OSError:
        pass
    return rss, pss


def children(pid: int) -> list[int]:
    try:
        kids = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except FileNotFoundError:
        return []
    return [int(k) for k in kids]


# --- a raw HTTP/1.1 client (precise, no library overhead in the figures) ---


class RawClient:
    """One keep-alive connection; request() returns (status, headers, body, seconds)."""

    def __init__(self, port: int, timeout: float = 30) -> None:
        self.port = port
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> RawClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @staticmethod
    def encode(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
        lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
        for k, v in (headers or {}).items():
            lines.append(f"{k}: {v}")
        if body or method in ("POST", "PUT", "PATCH"):
            lines.append(f"Content-Length: {len(body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + body

    def send_raw(self, data: bytes) -> tuple[int, dict[str, str], bytes, float]:
        t0 = time.perf_counter()
        self.sock.sendall(data)
        status, headers, body = self.read_response()
        return status, headers, body, time.perf_counter() - t0

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes, float]:
        return self.send_raw(self.encode(method, path, body, headers))

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("connection closed by the server")
        self.buf += chunk

    def read_response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers[k.strip().lower()] = v.strip()
        n = int(headers.get("content-length", "0"))
        while len(self.buf) < n:
            self._fill()
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body


def one_shot(
    port: int, method: str, path: str, body: bytes = b"", timeout: float = 30
) -> tuple[int, dict[str, str], bytes, float]:
    """One request on a new connection (Connection: close); the time includes the connect."""
    t0 = time.perf_counter()
    with RawClient(port, timeout) as c:
        status, headers, rbody, _ = c.request(method, path, body, {"Connection": "close"})
    return status, headers, rbody, time.perf_counter() - t0


def multipart(fields: dict[str, bytes | str], files: dict[str, tuple[str, bytes]]) -> tuple[bytes, str]:
    boundary = "hivebench" + os.urandom(8).hex()
    parts = []
    for k, v in fields.items():
        data = v.encode() if isinstance(v, str) else v
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n'.encode() + data + b"\r\n")
    for k, (fname, data) in files.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"; filename="{fname}"\r\n'
            f"Content-Type: application/wasm\r\n\r\n".encode()
            + data
            + b"\r\n"
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


# --- servers ---


@dataclass
class HiveServer:
    data_dir: Path
    workers: int = 1
    cpus: str | None = None
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    log_path: Path | None = None

    def start(self, wait: bool = True) -> HiveServer:
        self.port = self.port or free_port()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
        env.update({"HIVE_ADMIN_TOKEN": ADMIN_TOKEN, **self.env})
        cmd = [
            *taskset(self.cpus),
            str(BIN / "edge-hive"),
            "serve",
            "--bind",
            f"127.0.0.1:{self.port}",
            "--workers",
            str(self.workers),
            "--data-dir",
            str(self.data_dir),
        ]
        with open(self.log_path, "ab") as logf:
            self.started_at = time.perf_counter()
            self.proc = subprocess.Popen(
                cmd,
                stdout=logf,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=self.data_dir.parent,
                start_new_session=True,
            )
        if wait:
            self.wait_ready()
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def worker_pids(self) -> list[int]:
        return children(self.pid)

    def all_pids(self) -> list[int]:
        return [self.pid, *self.worker_pids()]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def wait_ready(self, timeout: float = 120, exclude: set[int] | None = None) -> None:
        """Until every worker (none of `exclude`) answered /readyz with 200."""
        deadline = time.monotonic() + timeout
        ready: set[int] = set()
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            pids = set(self.worker_pids())
            if len(pids) == self.workers and pids <= ready and not (pids & (exclude or set())):
                return
            try:
                status, _, body, _ = one_shot(self.port, "GET", "/readyz", timeout=5)
                if status == 200:
                    ready.add(json.loads(body)["pid"])
                    continue
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError(f"server not ready after {timeout} s:\n{self.log()[-3000:]}")

    def deploy(
        self, name: str, wasm: bytes, manifest: str | None = HELLO_MANIFEST, client: RawClient | None = None
    ) -> tuple[int, bytes, float]:
        fields: dict[str, bytes | str] = {"function": name}
        if manifest:
            fields["manifest"] = manifest
        body, ctype = multipart(fields, {"wasm": ("f.wasm", wasm)})
        headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": ctype}
        if client is not None:
            status, _, rbody, dt = client.request("POST", "/api/v1/edge/deploy", body, headers)
            return status, rbody, dt
        with RawClient(self.port, timeout=120) as c:
            status, _, rbody, dt = c.request("POST", "/api/v1/edge/deploy", body, {**headers, "Connection": "close"})
        return status, rbody, dt

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)  # our own session: the master and its workers only
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def __enter__(self) -> HiveServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class RefServer:
    """A comparison server answering hello: `node` (loadtests/node_hello.js) or `bare`
    (loadtests/bare_uvloop.py, the Python floor)."""

    kind: str
    cpus: str | None = None
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RefServer:
        self.port = free_port()
        argv = (
            ["node", str(HERE / "node_hello.js")]
            if self.kind == "node"
            else [sys.executable, str(HERE / "bare_uvloop.py")]
        )
        self.proc = subprocess.Popen(
            [*taskset(self.cpus), *argv, str(self.port)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                if one_shot(self.port, "POST", "/api/v1/edge/hello", HELLO_BODY)[0] == 200:
                    return self
            except OSError:
                time.sleep(0.02)
        raise RuntimeError(f"{self.kind} server did not start")

    def all_pids(self) -> list[int]:
        assert self.proc is not None
        return [self.proc.pid]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=10)

    def __enter__(self) -> RefServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- wrk ---

_BENCH_LINE = re.compile(r"^BENCH (\{.*\})$", re.M)


def run_wrk(
    port: int,
    *,
    conns: int,
    seconds: float,
    cpus: str | None,
    threads: int = 1,
    path: str = "/api/v1/edge/hello",
    server_pids: list[int] | None = None,
) -> dict[str, float]:
    """One wrk run with loadtests/post.lua; adds the server's CPU seconds over the run when given its PIDs."""
    cmd = [
        *taskset(cpus),
        "wrk",
        f"-t{min(threads, conns)}",
        f"-c{conns}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        "-s",
        str(HERE / "post.lua"),
        f"http://127.0.0.1:{port}{path}",
    ]
    before = cpu_seconds(server_pids) if server_pids else 0.0
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    after = cpu_seconds(server_pids) if server_pids else 0.0
    m = _BENCH_LINE.search(out.stdout)
    if out.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    r: dict[str, float] = json.loads(m.group(1))
    r["rps"] = r["requests"] / (r["duration_us"] / 1e6)
    if server_pids:
        r["cpu_s"] = after - before
        r["cpu_us_per_req"] = (after - before) / max(1, r["requests"]) * 1e6
    return r


def tmpdir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))
