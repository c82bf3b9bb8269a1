"""What the tests share that is not a fixture: paths, the admin token, free ports, polling, and real gunicorn
servers on 127.0.0.1 (their own process group; readiness by polling; TERM, then KILL)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ADMIN_TOKEN = "test-admin-token"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    data_dir: Path
    log_path: Path
    token: str = ADMIN_TOKEN

    @property
    def admin(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.token}"}

    def client(self, **kw: object) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kw)  # type: ignore[arg-type]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def deploy(self, name: str, wasm: bytes, manifest: str | None = None) -> httpx.Response:
        data = {"function": name, **({"manifest": manifest} if manifest else {})}
        with self.client() as c:
            return c.post(
                "/api/v1/edge/deploy",
                headers=self.admin,
                data=data,
                files={"wasm": ("f.wasm", wasm, "application/wasm")},
            )

    def worker_pids(self) -> set[int]:
        import psutil

        return {c.pid for c in psutil.Process(self.proc.pid).children()}

    def wait_ready(self, workers: int, timeout: float = 60) -> None:
        """Until every worker has answered /readyz with 200 (each request on a new connection)."""
        deadline = time.monotonic() + timeout
        ready: set[int] = set()
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.log()}")
            pids = self.worker_pids()
            if len(pids) == workers and pids <= ready:
                return
            try:
                r = httpx.get(self.url + "/readyz", timeout=2, headers={"connection": "close"})
                if r.status_code == 200:
                    ready.add(r.json()["pid"])
                    continue
            except httpx.HTTPError:
                pass
            time.sleep(0.02)  # polling interval, not a wait for an event
        raise RuntimeError(f"server not ready after {timeout}s:\n{self.log()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def start_server(
    data_dir: Path,
    *,
    workers: int = 2,
    env: dict[str, str] | None = None,
    token: str | None = ADMIN_TOKEN,
    port: int | None = None,
) -> Server:
    """`edge-hive serve` on 127.0.0.1 (a free port unless given), ready on every worker."""
    port = port or free_port()
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir.parent / f"server-{port}.log"  # appended to: a restart on the same port keeps both
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    full_env.update(env or {})
    if token:
        full_env["HIVE_ADMIN_TOKEN"] = token
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                str(BIN / "edge-hive"),
                "serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                str(workers),
                "--data-dir",
                str(data_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            start_new_session=True,
            cwd=data_dir.parent,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", data_dir, log_path, token or "")
    try:
        server.wait_ready(workers)
    except BaseException:
        server.stop()
        raise
    return server


def live_workers(server: Server) -> set[int]:
    """Worker PIDs, without exited workers the master has not reaped yet."""
    import psutil

    out = set()
    for pid in server.worker_pids():
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                out.add(pid)
        except psutil.NoSuchProcess:
            pass
    return out


def poll(what: str, cond: Callable[[], bool], timeout: float = 45, interval: float = 0.01) -> None:
    """Until cond() is true; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)  # polling interval
