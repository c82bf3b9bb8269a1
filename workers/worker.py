"""The gunicorn worker: uvicorn with uvloop and httptools, lifespan on (it warms every function before
the worker accepts), a hand-over and a drain before graceful shutdown, and the psutil watchdog."""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

import psutil
from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from hive.marks import MarkFiles, start_ticks
from hive.settings import load_settings
from workers.fastpath import FastHttpProtocol
from workers.watchdog import Watchdog


def notify_systemd(state: str) -> None:
    """sd_notify for a worker (the unit says NotifyAccess=all); a no-op outside systemd."""
    addr = os.environ.get("HIVE_NOTIFY_SOCKET")
    if not addr:
        return
    if addr[0] == "@":
        addr = "\0" + addr[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.connect(addr)
            s.sendall(state.encode())
    except OSError:
        logging.getLogger("hive.worker").warning("could not notify systemd at %s", addr, exc_info=True)


def install_library_patches() -> None:
    """The private-library patches (hive.telemetry.install, hive.sandbox.fastcall.install), each behind
    its version check: in the worker, after fork, before the app's lifespan makes the first metric or
    Linker. Imported here, not at the top: gunicorn's master imports this module and stays free of
    wasmtime."""
    from hive import telemetry
    from hive.sandbox import fastcall

    telemetry.install()
    fastcall.install()


def _siblings(pid: int) -> dict[int, int]:
    """The other children of our parent (gunicorn's workers): pid -> start ticks."""
    try:
        kids = psutil.Process(os.getppid()).children()
    except psutil.Error:
        return {}
    return {k.pid: t for k in kids if k.pid != pid and (t := start_ticks(k.pid)) is not None}


class ReadyMarks(MarkFiles):
    """`<data dir>/run/worker-<pid>.ready` (hive.marks) exists while a worker accepts connections. A
    worker asked to stop while a younger sibling (its replacement: gunicorn starts new workers on
    SIGHUP before it stops the old ones) is still warming keeps accepting until that sibling is
    ready, so a reload has no moment without a warm worker accepting."""

    # psutil finds a process's children by reading the stat of every process on the machine (0.7 ms
    # with 84 processes here): during a hand-over the siblings are listed at most this often.
    list_every_s = 0.5

    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, "worker-", ".ready")
        self._younger: dict[int, int] = {}
        self._listed_at = -math.inf

    def mark(self) -> None:
        if not self.write("accepting"):
            logging.getLogger("hive.worker").warning("could not write the ready mark in %s", self.dir)
        self.live()  # removes the marks of workers that are gone (kill -9)

    def unmark(self) -> None:
        self.remove()

    def successors_warming(self) -> bool:
        """Whether a younger sibling is alive and not yet accepting."""
        now = time.monotonic()
        if now - self._listed_at >= self.list_every_s:
            self._listed_at = now
            mine = start_ticks(self.pid)
            self._younger = {} if mine is None else {p: t for p, t in _siblings(self.pid).items() if t >= mine}
        else:  # without the ones that died since
            self._younger = {p: t for p, t in self._younger.items() if start_ticks(p) == t}
        return bool(self._younger) and not any(self.read(p) is not None for p in self._younger)


FULL_COLLECTION_EVERY = 100  # middle-generation collections per full one (CPython's default: 10)


class DrainingServer(Server):
    """Before uvicorn's graceful shutdown: wait (bounded by handover_s) until a replacement worker
    that is still warming accepts connections, then stop accepting and let open connections send one
    more request (answered with Connection: close), so a reload or recycle drops no keep-alive
    client and never leaves the socket without a warm worker."""

    drain_s = 1.0
    handover_s = 10.0
    marks: ReadyMarks | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        lifespan_startup = self.lifespan.startup

        async def startup_then_settle() -> None:
            await lifespan_startup()
            hive = getattr(self.config.app.state, "hive", None)  # type: ignore[union-attr]
            if hive is not None:
                try:
                    for name in hive.runtime.functions:
                        hive.telemetry.series(name, 200)
                except OSError:  # an unwritable data dir: serve without metrics (hive.telemetry says so)
                    pass
            # Everything loaded so far (modules, the app, every warm function) lives as long as the
            # worker: collect once and freeze it, so the cyclic GC never walks it again. Without
            # this the first requests pay for a full collection (about 20 ms here), and later full
            # collections stall the loop from time to time.
            gc.collect()
            gc.freeze()
            # A full collection walks everything made since the freeze (guest threads, instances,
            # connection pools: 6-17 ms here, a stall of every request) and, with the request path
            # free of reference cycles, finds nothing: let young collections run as usual, full ones
            # a tenth as often (about every 7 M allocations instead of 700 K).
            young, middle, _ = gc.get_threshold()
            gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)

        self.lifespan.startup = startup_then_settle
        await super().startup(sockets)
        if self.started:  # every function is warm (lifespan) and the sockets are served
            if self.marks is not None:
                self.marks.mark()
            notify_systemd(f"READY=1\nMAINPID={os.getppid()}\nSTATUS=worker {os.getpid()} serving")

    async def handover(self) -> None:
        if self.marks is None:
            return
        started = time.monotonic()
        while time.monotonic() - started < self.handover_s and not self.force_exit and self.marks.successors_warming():
            await asyncio.sleep(0.01)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.handover()
        if self.marks is not None:
            self.marks.unmark()
        for server in self.servers:
            server.close()
        self.config.app.state.draining = True  # type: ignore[union-attr]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.drain_s
        while self.server_state.connections and loop.time() < deadline and not self.force_exit:
            await asyncio.sleep(0.01)
        await super().shutdown(sockets)


class HiveWorker(UvicornWorker):
    CONFIG_KWARGS: dict[str, Any] = {
        "loop": "uvloop",
        # uvicorn's httptools protocol, with the invoke routes served without ASGI (workers/fastpath.py).
        "http": FastHttpProtocol,
        "lifespan": "on",
        "server_header": False,
    }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # hive.* (including guest stdout/stderr) goes where gunicorn's error log goes.
        logger = logging.getLogger("hive")
        logger.handlers = self.log.error_log.handlers
        logger.setLevel(self.log.error_log.level)
        logger.propagate = False
        self.settings = load_settings()

    async def _serve(self) -> None:
        install_library_patches()
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        server.drain_s = self.settings.drain_ms / 1000
        server.handover_s = min(10.0, self.settings.graceful_timeout / 3)
        server.marks = ReadyMarks(self.settings.data_path)
        self._install_sigquit_handler()
        s = self.settings

        def trip(reason: str) -> None:
            server.should_exit = True

        watchdog = Watchdog(
            max_rss_mb=s.worker_max_rss_mb,
            max_cpu_percent=s.worker_max_cpu_percent,
            cpu_window_s=s.worker_cpu_window_s,
            interval_s=s.watchdog_interval_ms / 1000,
            on_trip=trip,
        )
        task = asyncio.create_task(watchdog.run()) if (s.worker_max_rss_mb or s.worker_max_cpu_percent) else None
        try:
            await server.serve(sockets=self.sockets)
        finally:
            if task:
                task.cancel()
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
