"""The gunicorn worker: uvicorn with uvloop and httptools, lifespan on (it warms every function before
the worker accepts), a drain before graceful shutdown, and the psutil watchdog."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from typing import Any

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

from hive.settings import load_settings
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


class DrainingServer(Server):
    """Before uvicorn's graceful shutdown, stop accepting and let open connections send one more
    request (answered with Connection: close), so a reload or recycle drops no keep-alive client."""

    drain_s = 1.0

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:  # every function is warm (lifespan) and the sockets are served
            notify_systemd(f"READY=1\nMAINPID={os.getppid()}\nSTATUS=worker {os.getpid()} serving")

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
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
        "http": "httptools",
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
        self.config.app = self.wsgi
        server = DrainingServer(config=self.config)
        server.drain_s = self.settings.drain_ms / 1000
        self._install_sigquit_handler()
        s = self.settings

        def trip(reason: str) -> None:
            server.should_exit = True

        watchdog = Watchdog(max_rss_mb=s.worker_max_rss_mb, max_cpu_percent=s.worker_max_cpu_percent,
                            cpu_window_s=s.worker_cpu_window_s, interval_s=s.watchdog_interval_ms / 1000,
                            on_trip=trip)
        task = asyncio.create_task(watchdog.run()) if (s.worker_max_rss_mb or s.worker_max_cpu_percent) else None
        try:
            await server.serve(sockets=self.sockets)
        finally:
            if task:
                task.cancel()
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
