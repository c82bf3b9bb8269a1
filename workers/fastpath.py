"""A lean HTTP/1.1 front for the invoke routes, inside uvicorn's httptools protocol.

The worker is still uvicorn under gunicorn: the same sockets, signals, graceful shutdown and drain.
`FastHttpProtocol` subclasses uvicorn's `HttpToolsProtocol` (one instance per connection). A request
that hive.routes says invokes a function is served from the parser callbacks through the invocation
core (hive.invoke): `Invoker.begin` when its headers are complete, `feed` for each body chunk,
`finish` when the body is complete, and the reply's bytes go to the transport, with no ASGI scope,
task, Request or Response object. This module decides nothing about the request: limits, auth,
errors and rendering are the core's, the same for the Starlette route. Every other request (the admin
API, health, metrics, any path with an escape, an absolute-form target or an upgrade) goes to the
Starlette app.

What the transport does here, as uvicorn does it (tests/http checks each on a real server):
- the status line and headers uvicorn writes (its Date header, `connection: close` when the
  connection ends), HEAD (headers only), HTTP/1.0, `Expect: 100-continue`, keep-alive;
- chunked request bodies (httptools decodes them); pipelining: a request that arrives while an
  earlier one is unanswered waits in uvicorn's pipeline queue with reading paused, so responses go
  out in order; a client that does not read its responses stops being read;
- the drain: while `app.state.draining` (workers/worker.py) every response says Connection: close,
  and uvicorn's shutdown makes an in-flight request's response close its connection;
- uvicorn's access log line when gunicorn's access log is on.

A burst of new connections (hundreds opened in the same millisecond) is read hive.pacing.PER_TURN
connections per loop turn, so requests on connections already open are served in between.

Added for every connection, fast or not (uvicorn has no request-read timeout): a client that stops
in the middle of a request is disconnected after `keepalive` seconds without a byte (gunicorn's
keepalive, 5 s), a request whose headers are not complete within HEADER_TIMEOUT_S or whose body is
not complete within the body_timeout_s setting is disconnected whatever its pace, a URL over the
max_url_bytes setting is answered 414 before it is buffered, and a connection that never sends a
request is closed like an idle keep-alive one.

uvicorn is pinned in pyproject.toml to the versions whose HttpToolsProtocol internals this relies on.
"""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any

from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from hive import pacing
from hive.httprules import uri_too_long
from hive.render import Reply, error_reply
from hive.routes import invoke_target

HEADER_TIMEOUT_S = 10.0
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE = b"connection: close\r\n"


class _NoEvent:
    """uvicorn's connection_lost sets cycle.message_event; nothing waits on a fast cycle's."""

    @staticmethod
    def set() -> None:
        return None


class FastCycle:
    """One invoke request on a connection: moves its bytes between the parser, the invocation core
    and the transport. Looks like uvicorn's RequestResponseCycle where HttpToolsProtocol looks
    (response_complete, keep_alive, disconnected, message_event)."""

    __slots__ = (
        "proto",
        "app",
        "invoker",
        "method",
        "path",
        "query",
        "headers",
        "name",
        "keep_alive",
        "inv",
        "early",
        "message_complete",
        "started",
        "response_complete",
        "disconnected",
        "expect_100",
        "http_version",
    )
    message_event = _NoEvent()

    def __init__(
        self,
        proto: FastHttpProtocol,
        app: Any,
        invoker: Any,
        method: bytes,
        path: bytes,
        query: bytes,
        headers: list[tuple[bytes, bytes]],
        name: str,
        keep_alive: bool,
        expect_100: bool,
        http_version: str,
    ) -> None:
        self.proto = proto
        self.app = app
        self.invoker = invoker
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.name = name
        self.keep_alive = keep_alive
        self.expect_100 = expect_100
        self.http_version = http_version
        self.inv: Any = None
        self.early: list[bytes] = []  # body bytes that came before the request's turn (pipelining)
        self.message_complete = False
        self.started = False
        self.response_complete = False
        self.disconnected = False

    # --- driven by the protocol ---

    def start(self) -> None:
        """At the head of the connection's line."""
        self.started = True
        inv = self.inv = self.invoker.begin(
            self.name, self.method, self.path, self.query, self.headers, self.http_version == "1.1"
        )
        early, self.early = self.early, []
        for chunk in early:
            if not inv.feed(chunk):
                break
        if inv.reply is not None:
            return self.write(inv.reply)
        if self.expect_100:
            self.proto.transport.write(_CONTINUE)
        if self.message_complete:
            self.run()

    def body(self, data: bytes) -> None:
        if self.response_complete:
            return  # answered early (an error): the rest of the body is read and dropped
        inv = self.inv
        if inv is None:
            self.early.append(data)
        elif not inv.feed(data):
            self.write(inv.reply)

    def complete(self) -> None:
        self.message_complete = True
        if self.started and not self.response_complete:
            self.run()

    def lost(self) -> None:
        self.disconnected = True
        if self.started and not self.message_complete and not self.response_complete and self.inv is not None:
            self.response_complete = True
            self.inv.lost()

    def run(self) -> None:
        r = self.inv.finish()
        if type(r) is Reply:
            self.write(r)
        else:  # suspended: its guest runs off the loop
            r.add_done_callback(self._resumed)

    def _resumed(self, fut: asyncio.Future[Reply]) -> None:
        self.write(fut.result())  # the core renders every outcome: this never raises

    # --- the response ---

    def write(self, reply: Reply) -> None:
        if self.response_complete:
            return
        self.response_complete = True
        proto = self.proto
        transport = proto.transport
        if self.disconnected or transport.is_closing():
            proto.on_response_complete()
            return
        if reply.close or self.app.state.draining:
            self.keep_alive = False
        parts = [STATUS_LINE[reply.status]]
        for name, value in proto.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in reply.headers:
            parts += (name, b": ", value, b"\r\n")
        if not self.keep_alive:
            parts.append(_CLOSE)
        parts.append(b"\r\n")
        if self.method != b"HEAD":
            parts.append(reply.body)
        transport.write(b"".join(parts))
        if proto.access_log:
            proto.log_access(self, reply.status)
        if not self.keep_alive:
            transport.close()
        proto.on_response_complete()


class FastHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        app = getattr(self.config, "app", None)
        self._app = app if hasattr(app, "state") else None  # the Starlette app (HiveWorker sets it)
        self._in_message = False
        self._headers_done = False
        self._message_started_at = 0.0
        self._body_deadline = 0.0
        self._refused = False  # answered 414 in the middle of the URL: the rest of the bytes are ignored
        hive = getattr(getattr(self._app, "state", None), "hive", None)
        s = hive.settings if hive is not None else None
        self._max_url = s.max_url_bytes if s is not None else 8192
        self._body_timeout = s.body_timeout_s if s is not None else 30.0
        self._read_deadline = 0.0
        self._read_timer: asyncio.TimerHandle | None = None
        self._completing = False
        self._again = False
        self._paused_for_write = False
        self._idle_deadline: float | None = None
        self._idle_timer: asyncio.TimerHandle | None = None

    # --- connection ---

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_idle()  # a connection that never sends a request is closed like an idle keep-alive one
        turn = pacing.turns("connections").take()
        if turn is not None:  # one of a burst of new connections: read from a later loop turn on
            self.flow.pause_reading()
            turn.add_done_callback(self._read_from_now)

    def _read_from_now(self, _turn: asyncio.Future[None]) -> None:
        if not self.transport.is_closing():
            self.flow.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        cycle = self.cycle
        if type(cycle) is FastCycle:
            cycle.lost()
        super().connection_lost(exc)
        # This protocol and its cycle refer to each other: unlinked, a closed connection is freed by
        # reference counting instead of waiting for a cyclic collection (a burst of short connections
        # otherwise leaves thousands of objects to the collector, which stalls the loop for ms).
        self.cycle = None  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._in_message and not self.transport.is_closing():
            self._arm_read_timer()

    # --- the keep-alive timeout, without a timer per request ---
    # uvicorn arms a new timer after every response and cancels it on the next bytes (about 1.6 µs a
    # request); here one timer per connection checks a deadline when it fires.

    def _arm_idle(self) -> None:
        self._idle_deadline = deadline = self.loop.time() + self.timeout_keep_alive
        if self._idle_timer is None:
            self._idle_timer = self.loop.call_at(deadline, self._idle_check)

    def _unset_keepalive_if_required(self) -> None:
        self._idle_deadline = None
        if self.timeout_keep_alive_task is not None:  # one armed by uvicorn's own code, if any
            self.timeout_keep_alive_task.cancel()
            self.timeout_keep_alive_task = None

    def _idle_check(self) -> None:
        self._idle_timer = None
        deadline = self._idle_deadline
        if deadline is None or self.transport.is_closing():
            return  # busy again (or gone): the next response re-arms
        if self.loop.time() < deadline:
            self._idle_timer = self.loop.call_at(deadline, self._idle_check)
            return
        self.timeout_keep_alive_handler()

    # --- slow clients ---

    def _arm_read_timer(self) -> None:
        deadline = self.loop.time() + self.timeout_keep_alive
        if not self._headers_done:
            deadline = min(deadline, self._message_started_at + HEADER_TIMEOUT_S)
        else:
            deadline = min(deadline, self._body_deadline)
        self._read_deadline = deadline
        if self._read_timer is None:
            self._read_timer = self.loop.call_at(deadline, self._read_timeout)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timeout(self) -> None:
        self._read_timer = None
        if not self._in_message or self.transport.is_closing():
            return
        if self.flow.read_paused:  # we stopped reading (pipelining, back-pressure): not the client's doing
            self._read_deadline = self.loop.time() + self.timeout_keep_alive
        if self.loop.time() < self._read_deadline:
            self._read_timer = self.loop.call_at(self._read_deadline, self._read_timeout)
            return
        self.logger.info("closing a connection from %s that stalled in the middle of a request", self._peer())
        self.transport.close()

    # --- parser callbacks ---

    def on_message_begin(self) -> None:
        # What uvicorn's on_message_begin resets; its ASGI scope is built only for requests that
        # go to the ASGI app (on_headers_complete).
        self.url = b""
        self.expect_100_continue = False
        self.headers = []
        self._in_message = True
        self._headers_done = False
        self._message_started_at = self.loop.time()

    def on_url(self, url: bytes) -> None:
        if self._refused:
            return
        self.url += url
        if len(self.url) > self._max_url:  # before it is buffered any further
            self._refused = True
            reply = error_reply(uri_too_long(self._max_url))
            head = b"".join(b"%s: %s\r\n" % h for h in reply.headers)
            self.transport.write(STATUS_LINE[reply.status] + head + _CLOSE + b"\r\n" + reply.body)
            self.transport.close()

    # on_header stays uvicorn's (a layer here would cost every header of every request): after a 414
    # the transport is closing, and on_headers_complete ignores what was parsed.

    def on_headers_complete(self) -> None:
        if self._refused:
            return
        self._headers_done = True
        self._body_deadline = self.loop.time() + self._body_timeout
        cycle = self._fast_cycle()
        if cycle is None:
            # uvicorn's own on_message_begin builds the scope; keep what the parser gave so far.
            url, headers, expect = self.url, self.headers, self.expect_100_continue
            super().on_message_begin()
            self.url, self.headers, self.expect_100_continue = url, headers, expect
            self.scope["headers"] = headers
            return super().on_headers_complete()
        existing = self.cycle
        self.cycle = cycle  # type: ignore[assignment]
        if existing is None or existing.response_complete:
            self._unset_keepalive_if_required()
            cycle.start()
        else:  # behind an unanswered request: uvicorn's pipeline queue keeps the order
            self.flow.pause_reading()
            self.pipeline.appendleft((cycle, None))  # type: ignore[arg-type]

    def _fast_cycle(self) -> FastCycle | None:
        app = self._app
        if app is None or self.limit_concurrency is not None:
            return None
        hive = getattr(app.state, "hive", None)
        url = self.url
        if hive is None or url[:1] != b"/" or b"#" in url:
            return None
        q = url.find(b"?")
        path, query = (url, b"") if q < 0 else (url[:q], url[q + 1 :])
        if b"%" in path:  # Starlette routes on the decoded path: let it decode this one
            return None
        method = self.parser.get_method()
        name = invoke_target(method, path)
        if name is None or self.parser.should_upgrade():
            return None
        http_version = self.parser.get_http_version()
        keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
        return FastCycle(
            self,
            app,
            hive.invoker,
            method,
            path,
            query,
            self.headers,
            name,
            keep_alive,
            self.expect_100_continue,
            http_version,
        )

    def on_body(self, body: bytes) -> None:
        if self._refused:
            return
        cycle = self.cycle
        if type(cycle) is FastCycle:
            cycle.body(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._refused:
            return
        self._in_message = False
        self._cancel_read_timer()
        cycle = self.cycle
        if type(cycle) is FastCycle:
            cycle.complete()
        else:
            super().on_message_complete()

    # --- responses and the pipeline ---

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        if type(cycle) is FastCycle:
            self._unset_keepalive_if_required()
            cycle.start()
        else:
            super()._start_asgi_task(cycle, app)

    def on_response_complete(self) -> None:
        # A fast cycle started from the pipeline may finish at once and call this again: loop here
        # instead of recursing, so a long pipeline cannot exhaust the stack.
        if self._completing:
            self._again = True
            return
        self._completing = True
        try:
            while True:
                self._again = False
                # uvicorn's on_response_complete, with the keep-alive deadline instead of a new timer
                self.server_state.total_requests += 1
                if self.transport.is_closing():
                    break
                self._unset_keepalive_if_required()
                self.flow.resume_reading()
                if self.pipeline:
                    cycle, app = self.pipeline.pop()
                    self._start_asgi_task(cycle, app)
                else:
                    self._arm_idle()
                if not self._again:
                    break
        finally:
            self._completing = False
        if self.flow.write_paused and not self.flow.read_paused and not self.transport.is_closing():
            # The client does not read its responses: stop reading its requests until it does.
            self._paused_for_write = True
            self.flow.pause_reading()

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._paused_for_write:
            self._paused_for_write = False
            self.flow.resume_reading()

    def log_access(self, cycle: FastCycle, status: int) -> None:
        path = urllib.parse.quote(cycle.path.decode("ascii"))
        if cycle.query:
            path = f"{path}?{cycle.query.decode('ascii', 'replace')}"
        client = self._peer()
        self.access_logger.info(
            '%s - "%s %s HTTP/%s" %d', client, cycle.method.decode("ascii"), path, cycle.http_version, status
        )

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "-"
