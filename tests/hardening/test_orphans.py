"""Workers die with their master (issue 11, item 3): after SIGKILL of the gunicorn master no worker keeps
serving unsupervised or holds the port, and `edge-hive serve` on the same data dir and port serves again."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import httpx
import psutil

from tests.support import Server, free_port, poll, start_server


def serve(data_dir: Path, port: int, workers: int = 2) -> Server:
    """`edge-hive serve` on a given port: the restart must get the port the orphans would hold."""
    return start_server(data_dir, workers=workers, port=port)


def running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_workers_exit_when_the_master_is_killed(tmp_path: Path) -> None:
    data_dir, port = tmp_path / "data", free_port()
    server = serve(data_dir, port)
    workers = server.worker_pids()
    assert len(workers) == 2
    try:
        os.kill(server.proc.pid, signal.SIGKILL)
        server.proc.wait(timeout=10)
        poll("the orphaned workers to exit", lambda: not any(running(p) for p in workers), timeout=30, interval=0.05)
        with httpx.Client(timeout=2) as c:  # nobody answers on the port any more
            try:
                c.get(f"{server.url}/healthz")
                raise AssertionError("an orphaned worker still serves")
            except httpx.TransportError:
                pass
    finally:
        os.killpg(server.proc.pid, signal.SIGKILL)  # whatever is left of the old server's process group

    again = serve(data_dir, port)  # same data dir, same port
    try:
        with again.client() as c:
            assert c.get("/healthz").status_code == 200
            assert c.get("/api/v1/edge", headers=again.admin).status_code == 200
    finally:
        again.stop()
