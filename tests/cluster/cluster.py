"""What the cluster tests share: nodes (real `edge-hive serve` processes in cluster mode, each its own data
dir and loopback port, all on the session's PostgreSQL), a bounded load generator, and the figures."""

from __future__ import annotations

import http.client
import os
import signal
import statistics
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.guests import const_wat, wat
from tests.support import ADMIN_TOKEN, BIN, Server, free_port

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
WORKERS = 2


def body_of(name: str, version: int) -> bytes:
    return f"{name} build {version}".encode()


def module(name: str, build: int) -> bytes:
    """A guest that answers its own name and build number (each build a different module)."""
    return wat(const_wat(body_of(name, build).decode()))


@dataclass
class Node:
    name: str
    data_dir: Path
    dsn: str
    port: int = field(default_factory=free_port)
    server: Server | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def launch(self) -> Server:
        """Start the node (its own process group) without waiting for it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.data_dir.parent / f"{self.name}-{self.port}-{time.monotonic_ns()}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
        env.update(
            {
                "HIVE_ADMIN_TOKEN": ADMIN_TOKEN,
                "HIVE_CLUSTER_DSN": self.dsn,
                "HIVE_CLUSTER_NODE_NAME": self.name,
                **self.extra_env,
            }
        )
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    str(BIN / "edge-hive"),
                    "serve",
                    "--bind",
                    f"127.0.0.1:{self.port}",
                    "--workers",
                    str(WORKERS),
                    "--data-dir",
                    str(self.data_dir),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
                cwd=self.data_dir.parent,
            )
        self.server = Server(proc, self.url, self.data_dir, log_path)
        return self.server

    def start(self) -> Server:
        server = self.launch()
        try:
            server.wait_ready(WORKERS, timeout=90)
        except BaseException:
            server.stop()
            raise
        return server

    def kill(self) -> None:
        """SIGKILL the node's whole process group: master and workers, no cleanup."""
        assert self.server is not None
        os.killpg(self.server.proc.pid, signal.SIGKILL)
        self.server.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()

    def invoke(self, fn: str) -> httpx.Response:
        """On a new connection, so that the two workers both get asked."""
        return httpx.post(f"{self.url}/api/v1/edge/{fn}", headers={"connection": "close"}, timeout=30)

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers=ADMIN, timeout=60, **kw)

    def deploy(self, fn: str, wasm: bytes, manifest: str | None = None) -> httpx.Response:
        data = {"function": fn, **({"manifest": manifest} if manifest else {})}
        return httpx.post(
            self.url + "/api/v1/edge/deploy",
            headers=ADMIN,
            data=data,
            timeout=60,
            files={"wasm": ("f.wasm", wasm, "application/wasm")},
        )

    def rollback(self, fn: str, version: int | None = None) -> httpx.Response:
        return self.admin("POST", f"/api/v1/edge/{fn}/rollback", json={} if version is None else {"version": version})


def via(proxy_port: int, dsn: str, pg_port: int) -> str:
    """The DSN through a proxy (tests/cluster/proxy.py) on `proxy_port` instead of PostgreSQL's port."""
    return dsn.replace(f"port={pg_port}", f"port={proxy_port}")


def is_fenced(r: httpx.Response) -> bool:
    return (
        r.status_code == 503
        and r.headers.get("content-type", "").startswith("application/json")
        and (r.json().get("error") == "node_fenced")
    )


def cluster_part(node: Node) -> dict[str, Any]:
    """The cluster part of the node's public /readyz (whatever its status)."""
    return httpx.get(node.url + "/readyz", timeout=10, headers={"connection": "close"}).json()["cluster"]


def status(node: Node) -> dict[str, Any]:
    r = node.admin("GET", "/api/v1/cluster")
    assert r.status_code == 200, r.text
    return r.json()


def healthy(node: Node, names: list[str]) -> bool:
    try:
        nodes = {n["name"]: n for n in status(node)["nodes"]}
    except (AssertionError, httpx.HTTPError):
        return False
    return all(nodes.get(n, {}).get("health") == "ok" for n in names)


class Load:
    """Requests to `functions` across `nodes`, from a few threads on keep-alive connections, at most
    `rps_per_thread` each; every answer that is not a 200 (or any connection error) is a failure."""

    def __init__(
        self,
        nodes: list[Node],
        functions: list[str],
        threads: int = 3,
        rps_per_thread: float = 60,
        check: Callable[[str, bytes], bool] | None = None,
    ) -> None:
        self.nodes = nodes
        self.functions = functions
        self.threads = threads
        self.interval = 1 / rps_per_thread
        self.check = check
        self.sent = 0
        self.statuses: Counter[int] = Counter()
        self.failures: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._workers = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def __enter__(self) -> Load:
        for t in self._workers:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._workers:
            t.join(timeout=60)

    def _run(self, index: int) -> None:
        conns: dict[int, http.client.HTTPConnection] = {}
        i = index
        while not self._stop.is_set():
            node = self.nodes[i % len(self.nodes)]
            fn = self.functions[i % len(self.functions)]
            i += 1
            conn = conns.get(node.port)
            if conn is None:
                conn = conns[node.port] = http.client.HTTPConnection("127.0.0.1", node.port, timeout=30)
            problem = None
            try:
                conn.request("POST", f"/api/v1/edge/{fn}", body=b"{}")
                resp = conn.getresponse()
                body = resp.read()
                if resp.status != 200:
                    problem = f"{node.name} {fn}: {resp.status} {body[:200]!r}"
                elif self.check is not None and not self.check(fn, body):
                    problem = f"{node.name} {fn}: unexpected body {body[:200]!r}"
                if resp.getheader("connection", "").lower() == "close":
                    conn.close()
                    conns.pop(node.port, None)
                status_code = resp.status
            except (OSError, http.client.HTTPException) as e:
                problem, status_code = f"{node.name} {fn}: {type(e).__name__}: {e}", 0
                conn.close()
                conns.pop(node.port, None)
            with self._lock:
                self.sent += 1
                self.statuses[status_code] += 1
                if problem:
                    self.failures.append(problem)
            self._stop.wait(self.interval)
        for c in conns.values():
            c.close()


def figures(what: str, values_ms: list[float]) -> str:
    line = (
        (f"{what}: n={len(values_ms)} median {statistics.median(values_ms):.0f} ms, max {max(values_ms):.0f} ms")
        if values_ms
        else f"{what}: none"
    )
    print(f"\n[cluster figures] {line}", flush=True)
    return line
