"""PostgreSQL connections for cluster mode (psycopg 3): a small pool shared by a process's threads.

Connections are opened lazily, so a process starts (and serves from LMDB) while PostgreSQL is down. A
connection that fails with a connection-level error is dropped, and so are the idle ones (after a
server restart they are all dead); one left idle for a while is checked before it is lent again, so the
first use after PostgreSQL returns does not fail on a stale connection.

A server that stops answering while the network still acknowledges (a stalled server, a proxy or
firewall that holds connections open) would leave a call blocked for good: `guard` bounds a block of
calls by cutting the connection's socket when it overruns, so the blocked call fails like a lost
connection.
Open a Pool per process, after fork.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import socket
import threading
import time
from collections.abc import Iterator

import psycopg

CONNECT_TIMEOUT_S = 3
# A connection blocked by a partition fails after this instead of hanging (libpq's tcp_user_timeout).
TCP_USER_TIMEOUT_MS = 5000
CHECK_IDLE_S = 2.0  # an idle connection older than this is pinged before use


def connect(dsn: str, *, application_name: str = "edge-hive", autocommit: bool = True) -> psycopg.Connection:
    """One connection with the cluster's timeouts; autocommit, so each `transaction()` block is one."""
    return psycopg.connect(
        dsn,
        autocommit=autocommit,
        connect_timeout=CONNECT_TIMEOUT_S,
        application_name=application_name[:63],
        tcp_user_timeout=TCP_USER_TIMEOUT_MS,
        keepalives=1,
        keepalives_idle=5,
        keepalives_interval=2,
        keepalives_count=2,
    )


def cut(conn: psycopg.Connection) -> None:
    """Shut the connection's socket down under whatever call is blocked on it (which then fails)."""
    try:
        fd = conn.pgconn.socket
    except psycopg.Error:
        return  # closed already
    try:
        with socket.socket(fileno=os.dup(fd)) as s:
            s.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _Watchdog:
    """One thread per process that cuts the connections whose guarded block overran."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._due: dict[int, tuple[float, psycopg.Connection]] = {}
        self._ids = itertools.count()
        self._pid = -1

    @contextlib.contextmanager
    def guard(self, conn: psycopg.Connection, seconds: float) -> Iterator[None]:
        token = next(self._ids)
        with self._cond:
            if self._pid != os.getpid():  # first use in this process (threads do not survive a fork)
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="hive-pg-watchdog", daemon=True).start()
            self._due[token] = (time.monotonic() + seconds, conn)
            self._cond.notify()
        try:
            yield
        finally:
            with self._cond:
                self._due.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                now = time.monotonic()
                late = [t for t, (at, _) in self._due.items() if at <= now]
                conns = [self._due.pop(t)[1] for t in late]
                wait = min((at for at, _ in self._due.values()), default=now + 60) - now
                if not conns:
                    self._cond.wait(max(0.01, wait))
            for conn in conns:
                cut(conn)


_watchdog = _Watchdog()


def guard(conn: psycopg.Connection, seconds: float) -> contextlib.AbstractContextManager[None]:
    """Bound the calls made on `conn` inside the block: past `seconds`, its socket is cut."""
    return _watchdog.guard(conn, seconds)


def is_connection_error(e: BaseException) -> bool:
    """PostgreSQL unreachable, restarted or shutting down (as opposed to an error in the statement)."""
    return isinstance(e, psycopg.OperationalError | psycopg.InterfaceError)


class Pool:
    def __init__(
        self, dsn: str, *, size: int = 8, application_name: str = "edge-hive", check_idle_s: float = CHECK_IDLE_S
    ) -> None:
        self.dsn = dsn
        self.check_idle_s = (
            check_idle_s  # 0: ping every connection lent again (for writes that must not fail on a stale one)
        )
        self.size = size
        self.application_name = application_name
        self._idle: list[tuple[psycopg.Connection, float]] = []
        self._lent = 0
        self._cond = threading.Condition()
        self._pid = os.getpid()
        self._closed = False

    @contextlib.contextmanager
    def connection(self, wait_s: float = 10.0, timeout_s: float | None = None) -> Iterator[psycopg.Connection]:
        """A connection for the block (bounded by `timeout_s`, see guard); psycopg errors pass through
        (the caller maps them)."""
        conn = self._take(wait_s)
        lost = False
        try:
            with guard(conn, timeout_s) if timeout_s is not None else contextlib.nullcontext():
                yield conn
        except BaseException as e:
            if is_connection_error(e):
                lost = True
                self._drop_idle()
            raise
        finally:
            # Reused after an error in a statement (rolled back), never after a lost connection.
            self._give(
                conn,
                not lost
                and not conn.closed
                and not conn.broken
                and conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE,
            )

    def _take(self, wait_s: float) -> psycopg.Connection:
        if os.getpid() != self._pid:
            raise psycopg.InterfaceError("this pool was opened in another process: open one per process, after fork")
        deadline = time.monotonic() + wait_s
        conn: psycopg.Connection | None  # None: a free slot, connected below
        with self._cond:
            while True:
                if self._closed:
                    raise psycopg.InterfaceError("the PostgreSQL pool is closed")
                if self._idle:
                    conn, since = self._idle.pop()
                    self._lent += 1
                    break
                if self._lent < self.size:
                    conn, since = None, 0.0
                    self._lent += 1
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    raise psycopg.OperationalError(
                        f"no free PostgreSQL connection after {wait_s:.0f}s (pool of {self.size})"
                    )
                self._cond.wait(left)
        try:
            if conn is not None and time.monotonic() - since >= self.check_idle_s:
                try:
                    with guard(conn, CONNECT_TIMEOUT_S):
                        conn.execute("SELECT 1")
                except psycopg.Error:
                    conn.close()
                    conn = None
            if conn is None:
                conn = connect(self.dsn, application_name=self.application_name)
            return conn
        except BaseException:
            with self._cond:
                self._lent -= 1
                self._cond.notify()
            raise

    def _give(self, conn: psycopg.Connection, reusable: bool) -> None:
        with self._cond:
            self._lent -= 1
            if reusable and not self._closed:
                self._idle.append((conn, time.monotonic()))
                conn = None  # type: ignore[assignment]
            self._cond.notify()
        if conn is not None:
            conn.close()

    def _drop_idle(self) -> None:
        with self._cond:
            idle, self._idle = self._idle, []
        for conn, _ in idle:
            conn.close()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if os.getpid() == self._pid:
            self._drop_idle()
