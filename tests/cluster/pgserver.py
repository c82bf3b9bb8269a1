"""A throwaway PostgreSQL server for the tests: Debian's binaries (scripts/toolchains/postgres.sh installs
them), initdb in a temp dir, a free loopback port, run as an unprivileged user (the server refuses to run
as root), stopped with `pg_ctl stop -m fast` (by PID if that fails).

One server per test session, shared by tests/kv and tests/cluster through `acquire`/`release`
(reference counted, so two conftests' session fixtures start it once). Each user makes its own database.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from tests.support import free_port

USER = "nobody"  # present on every Debian system; used only when the tests run as root


def pg_bin(name: str) -> str:
    """A PostgreSQL server binary: on PATH, or in Debian's /usr/lib/postgresql/<version>/bin (newest)."""
    found = shutil.which(name)
    if found:
        return found
    for d in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(p.split("/")[-2]), reverse=True):
        if os.access(os.path.join(d, name), os.X_OK):
            return os.path.join(d, name)
    raise RuntimeError(
        f"PostgreSQL's {name} was not found: run scripts/toolchains/postgres.sh "
        "(scripts/dev test does) to install Debian's postgresql package"
    )


@dataclass
class PgServer:
    root: Path
    port: int
    users: int = 0
    _databases: int = 0
    _as: tuple[int, int] | None = field(default=None, repr=False)

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def log_path(self) -> Path:
        return self.root / "server.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=hive dbname={dbname} connect_timeout=5"

    def _run(self, *argv: str, timeout: float = 120) -> subprocess.CompletedProcess[bytes]:
        kw: dict[str, object] = {}
        if self._as is not None:
            kw = {"user": self._as[0], "group": self._as[1], "extra_groups": []}
        return subprocess.run(argv, capture_output=True, timeout=timeout, check=False, cwd=self.root, **kw)  # type: ignore[call-overload]

    def init(self) -> None:
        r = self._run(
            pg_bin("initdb"),
            "-D",
            str(self.data),
            "-U",
            "hive",
            "--auth=trust",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-instructions",
        )
        if r.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{r.stdout.decode()}{r.stderr.decode()}")
        # Loopback TCP only, no Unix socket; durability is not what the tests are about.
        (self.data / "postgresql.auto.conf").write_text(
            f"port = {self.port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n"
            "max_connections = 300\nfsync = off\nsynchronous_commit = off\nfull_page_writes = off\n"
            "shared_buffers = 32MB\n"
        )

    def start(self) -> None:
        r = self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-l", str(self.log_path), "-w", "-t", "60", "start")
        if r.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed:\n{r.stdout.decode()}{r.stderr.decode()}\n{self.log()}")
        self.wait_ready()

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.dsn(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError:
                if time.monotonic() >= deadline:
                    raise RuntimeError(f"PostgreSQL not ready after {timeout}s:\n{self.log()}") from None
                time.sleep(0.05)  # polling interval, not a wait for an event

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    def stop(self, mode: str = "fast") -> None:
        pid = self.pid()
        r = self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop", timeout=60)
        if r.returncode != 0 and pid is not None:
            try:  # by PID: SIGQUIT is an immediate shutdown
                os.kill(pid, signal.SIGQUIT)
            except ProcessLookupError:
                return
            for _ in range(300):
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    return
                time.sleep(0.05)
            os.kill(pid, signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; its DSN."""
        self._databases += 1
        name = f"{prefix}_{os.getpid()}_{self._databases}"
        with psycopg.connect(self.dsn(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)


_server: PgServer | None = None


def acquire() -> PgServer:
    """The session's server, started on first use."""
    global _server
    if _server is None:
        root = Path(tempfile.mkdtemp(prefix="hive-pg-"))
        server = PgServer(root, free_port())
        if os.geteuid() == 0:
            pw = pwd.getpwnam(USER)
            server._as = (pw.pw_uid, pw.pw_gid)
            os.chown(root, pw.pw_uid, pw.pw_gid)
        try:
            server.init()
            server.start()
        except BaseException:
            server.stop()
            shutil.rmtree(root, ignore_errors=True)
            raise
        _server = server
    _server.users += 1
    return _server


def release(server: PgServer) -> None:
    global _server
    server.users -= 1
    if server.users <= 0 and _server is server:
        _server = None
        server.stop()
        shutil.rmtree(server.root, ignore_errors=True)
