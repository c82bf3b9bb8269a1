"""A lean HTTP/1.1 front for the invoke routes, inside uvicorn's httptools protocol.

The worker is still uvicorn under gunicorn: the same sockets, signals, graceful shutdown and drain.
`FastHttpProtocol` subclasses uvicorn's `HttpToolsProtocol` (one instance per connection). A request
for `/api/v1/edge/{name}` (GET, POST, PUT, PATCH, HEAD, OPTIONS) or `/functions/v1/{name}[/...]` (those
and DELETE) is served from the parser callbacks: `Invoker.admit` when its headers are complete,
`Invoker.call` when its body is, and the response bytes are written to the transport, with no ASGI
scope, task, Request or Response object. Every other request (the admin API, health, metrics, any
path with an escape, an absolute-form target or an upgrade) goes to the Starlette app as before.

Kept from the Starlette route, with one implementation (tests/http checks each on a real server):
- hive.app's header-set limit (431), request id, body checks (check_content_length, body_too_large),
  and error JSON (hive_error_response, internal_error_response); hive.invoke.Invoker's admit,
  rejected, call and its thread policy for long-running functions;
- the status line and headers uvicorn writes (its Date header, `connection: close` when the
  connection ends), HEAD (headers only), HTTP/1.0, `Expect: 100-continue`, keep-alive;
- chunked request bodies (httptools decodes them); pipelining: a request that arrives while an
  earlier one is unanswered waits in uvicorn's pipeline queue with reading paused, so responses go
  out in order; a client that does not read its responses stops being read;
- the drain: while `app.state.draining` (workers/worker.py) every response says Connection: close,
  and uvicorn's shutdown makes an in-flight request's response close its connection;
- uvicorn's access log line when gunicorn's access log is on.

Added for every connection, fast or not (uvicorn has no request-read timeout): a client that stops
in the middle of a request is disconnected after `keepalive` seconds without a byte (gunicorn's
keepalive, 5 s), a request whose headers are not complete within HEADER_TIMEOUT_S is disconnected
whatever its pace, and a connection that never sends a request is closed like an idle keep-alive one.
"""

from __future__ import annotations

import asyncio
import re
import urllib.parse
from typing import Any

from starlette.datastructures import Headers
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from hive.errors import ClientGone, HiveError

HEADER_TIMEOUT_S = 10.0
_API = re.compile(rb"/api/v1/edge/([a-z][a-z0-9_-]{0,62})")
_SUPA = re.compile(rb"/functions/v1/([a-z][a-z0-9_-]{0,62})(?:/[\x21-\x7e]*)?")
# uvicorn refuses these in a header value (it raises, logs, and drops the connection).
_BAD_VALUE = re.compile(b"[\x00-\x08\x0a-\x1f\x7f]")
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_CLOSE = b"connection: close\r\n"

# From hive.app, bound in the worker on the first connection: gunicorn's master imports this module
# (through the worker class) and must stay free of wasmtime and LMDB.
_api: Any = None


def bind_app_api() -> None:
    global _api
    if _api is not None:
        return
    from types import SimpleNamespace

    from hive import app

    _api = SimpleNamespace(
        api_methods=frozenset(m.encode() for m in app.INVOKE_METHODS),
        supa_methods=frozenset(m.encode() for m in app.ALL_METHODS),
        check_content_length=app.check_content_length,
        body_too_large=app.body_too_large,
        hive_error_response=app.hive_error_response,
        internal_error_response=app.internal_error_response,
        headers_too_large=app.headers_too_large,
        request_id_of=app.request_id_of,
        JSONResponse=app.JSONResponse,
    )


class _NoEvent:
    """uvicorn's connection_lost sets cycle.message_event; nothing waits on a fast cycle's."""

    @staticmethod
    def set() -> None:
        return None


class FastCycle:
    """One invoke request: collects the body, calls the guest, writes the response. Looks like
    uvicorn's RequestResponseCycle where HttpToolsProtocol looks (response_complete, keep_alive,
    disconnected, message_event)."""

    __slots__ = ("proto", "app", "hive", "method", "path", "query", "headers", "name", "keep_alive", "loaded",
                 "request_id", "chunks", "size", "message_complete", "started", "response_complete",
                 "disconnected", "expect_100", "http_version")
    message_event = _NoEvent()

    def __init__(self, proto: FastHttpProtocol, app: Any, hive: Any, method: bytes, path: bytes, query: bytes,
                 headers: list[tuple[bytes, bytes]], name: str, keep_alive: bool, expect_100: bool,
                 http_version: str) -> None:
        self.proto = proto
        self.app = app
        self.hive = hive
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.name = name
        self.keep_alive = keep_alive
        self.expect_100 = expect_100
        self.http_version = http_version
        self.loaded: Any = None
        self.request_id = ""
        self.chunks: list[bytes] = []
        self.size = 0
        self.message_complete = False
        self.started = False
        self.response_complete = False
        self.disconnected = False

    # --- driven by the protocol ---

    def start(self) -> None:
        """At the head of the connection's line: what hive.app's RequestGuard and invoke route do
        before they read the body."""
        self.started = True
        hive = self.hive
        s = hive.settings
        err = _api.headers_too_large(self.headers, s.max_headers, s.max_header_bytes)
        if err is not None:  # RequestGuard answers this itself, before routing and the drain header
            r = _api.JSONResponse(err.to_dict(), status_code=err.status)
            return self.write(r.status_code, r.raw_headers, r.body, drain=False)
        invoker = hive.invoker
        self.request_id = request_id = _api.request_id_of(self._header(b"x-request-id"))
        try:
            loaded = invoker.admit(self.name, Headers(raw=self.headers), request_id)
        except HiveError as e:
            return self.fail(e)
        except Exception:
            return self.crash()
        self.loaded = loaded
        limit = loaded.max_request_bytes
        try:
            _api.check_content_length(self._header(b"content-length"), limit, "request body")
            if self.size > limit:  # pipelined: this much arrived before the request's turn
                raise _api.body_too_large(limit, "request body")
        except HiveError as e:
            invoker.rejected(loaded, e, request_id)
            return self.fail(e)
        if self.expect_100:
            self.proto.transport.write(_CONTINUE)
        if self.message_complete:
            self.run()

    def body(self, data: bytes) -> None:
        if self.response_complete:
            return  # answered early (an error): the rest of the body is read and dropped
        self.size += len(data)
        loaded = self.loaded
        if loaded is not None and self.size > loaded.max_request_bytes:
            e = _api.body_too_large(loaded.max_request_bytes, "request body")
            self.hive.invoker.rejected(loaded, e, self.request_id)
            self.chunks = []
            return self.fail(e)
        self.chunks.append(data)  # before start (pipelined), start() applies the limit

    def complete(self) -> None:
        self.message_complete = True
        if self.started and not self.response_complete:
            self.run()

    def lost(self) -> None:
        """The client went away: as in the invoke route, a body cut short counts as client_disconnected."""
        self.disconnected = True
        if self.started and not self.message_complete and not self.response_complete and self.loaded is not None:
            self.response_complete = True
            e = ClientGone("the client disconnected before sending the whole body")
            self.hive.invoker.rejected(self.loaded, e, self.request_id)

    def run(self) -> None:
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        invoker = self.hive.invoker
        loaded = self.loaded
        if invoker.offload(loaded):  # a function seen to run long: off the event loop (hive.invoke)
            fut = invoker.submit(loaded, self.method, self.path, self.query, self.headers, body, self.request_id)
            fut.add_done_callback(self._offloaded_done)
            return
        try:
            resp = invoker.call(loaded, self.method, self.path, self.query, self.headers, body, self.request_id)
        except HiveError as e:
            return self.fail(e)
        except Exception:
            return self.crash()
        self.respond_guest(resp)

    def _offloaded_done(self, fut: asyncio.Future[Any]) -> None:
        try:
            resp = fut.result()
        except HiveError as e:
            return self.fail(e)
        except Exception:
            return self.crash()
        self.respond_guest(resp)

    # --- responses ---

    def _header(self, name: bytes) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode("latin-1")
        return None

    def respond_guest(self, resp: Any) -> None:
        headers = resp.headers
        for _, value in headers:
            if _BAD_VALUE.search(value) is not None:
                # What uvicorn does with such a header from the ASGI app: log, and drop the connection.
                self.proto.logger.error("Exception in ASGI application\n",
                                        exc_info=RuntimeError("Invalid HTTP header value."))
                self.response_complete = True
                self.proto.transport.close()
                return
        body = resp.body
        self.write(resp.status, headers, body, b"content-length: %d\r\n" % len(body))

    def fail(self, e: HiveError) -> None:
        r = _api.hive_error_response(e, self.method.decode("ascii"), self.path.decode("ascii"))
        self.write(r.status_code, r.raw_headers, r.body)

    def crash(self) -> None:
        """An unexpected exception (call it in the except block): the 500 JSON, then the connection
        closes, as when Starlette's ServerErrorMiddleware re-raises to uvicorn."""
        r = _api.internal_error_response(self.method.decode("ascii"), self.path.decode("ascii"))
        self.write(r.status_code, r.raw_headers, r.body, close_after=True)

    def write(self, status: int, headers: list[tuple[bytes, bytes]], body: bytes, extra: bytes = b"",
              close_after: bool = False, drain: bool = True) -> None:
        if self.response_complete:
            return
        self.response_complete = True
        proto = self.proto
        transport = proto.transport
        if self.disconnected or transport.is_closing():
            proto.on_response_complete()
            return
        if drain and self.app.state.draining:
            self.keep_alive = False
        parts = [STATUS_LINE[status]]
        for name, value in proto.server_state.default_headers:
            parts += (name, b": ", value, b"\r\n")
        for name, value in headers:
            parts += (name, b": ", value, b"\r\n")
        if extra:
            parts.append(extra)
        if not self.keep_alive:
            parts.append(_CLOSE)
        parts.append(b"\r\n")
        if self.method != b"HEAD":
            parts.append(body)
        transport.write(b"".join(parts))
        if proto.access_log:
            proto.log_access(self, status)
        if not self.keep_alive or close_after:
            transport.close()
        proto.on_response_complete()


class FastHttpProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        bind_app_api()
        app = getattr(self.config, "app", None)
        self._app = app if hasattr(app, "state") else None  # the Starlette app (HiveWorker sets it)
        self._in_message = False
        self._headers_done = False
        self._message_started_at = 0.0
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

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        cycle = self.cycle
        if type(cycle) is FastCycle:
            cycle.lost()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
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

    def on_headers_complete(self) -> None:
        self._headers_done = True
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
        path, query = (url, b"") if q < 0 else (url[:q], url[q + 1:])
        if b"%" in path:  # Starlette routes on the decoded path: let it decode this one
            return None
        method = self.parser.get_method()
        m = _API.fullmatch(path)
        if m is not None:
            if method not in _api.api_methods or m.group(1) == b"deploy":
                return None
        else:
            m = _SUPA.fullmatch(path)
            if m is None or method not in _api.supa_methods:
                return None
        if self.parser.should_upgrade():
            return None
        http_version = self.parser.get_http_version()
        keep_alive = http_version != "1.0" and self.parser.should_keep_alive()
        return FastCycle(self, app, hive, method, path, query, self.headers, m.group(1).decode("ascii"),
                         keep_alive, self.expect_100_continue, http_version)

    def on_body(self, body: bytes) -> None:
        cycle = self.cycle
        if type(cycle) is FastCycle:
            cycle.body(body)
        else:
            super().on_body(body)

    def on_message_complete(self) -> None:
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
        self.access_logger.info('%s - "%s %s HTTP/%s" %d', client, cycle.method.decode("ascii"), path,
                                cycle.http_version, status)

    def _peer(self) -> str:
        return f"{self.client[0]}:{self.client[1]}" if self.client else "-"
