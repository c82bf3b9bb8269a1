"""The invocation core: one request for a function, from its head to its response, whatever the transport.

`Invoker.begin(name, method, path, query, headers)` makes an `Invocation`: it checks the head (header
set, URL, Host), gives the request its id, and admits it (current version, auth, rate limit, declared
body size). The transport then `feed`s body chunks and calls `finish`, which gives a `Reply` or a
future of one: a suspended invocation (a guest on a guest thread, waiting on CPU or on I/O) is the
ordinary case, not a special path. Every outcome, error or not, is a hive.render.Reply, with its
telemetry recorded here. The Starlette route (hive.app) and the fast path (workers/fastpath.py) only
move bytes in and out.

Long-running functions run off the event loop. A guest call blocks the thread that makes it, and
the event loop serves every other request of the worker, so one function that spins to its time
limit would stall all of them. The policy is adaptive: a function runs on the loop (no thread hop:
the fast case) until one of its calls uses more than OFFLOAD_AFTER_MS of CPU time (thread CPU
time, so that a quick function delayed by contention is not mistaken for a long one); from then on
its calls run in a small per-worker thread pool (wasmtime releases the GIL while the guest runs),
at a lower scheduling priority than the loop, until RETURN_AFTER_FAST_CALLS calls in a row finish
quickly again.
The call that shows a function to be long (the first one, and the first one after it came back)
still runs on the loop.
What makes this safe with wasmtime-py:
- an instance is taken from the pool and put back by Runtime.invoke with single list operations
  (atomic under the GIL), and a thread runs only the call on the instance it was given: one store
  is used by one thread at a time;
- host functions find their guest through a thread-local context (hive.sandbox.host), set by the
  thread that makes the call;
- wasmtime-py passes exceptions raised in host functions through a module global; hive.sandbox.fastcall
  makes that per thread, so a trap on one thread never picks up an exception raised on another;
- what must happen on the loop (re-warming an instance after a failure) is handed to it with
  call_soon_threadsafe; telemetry serialises its function-log writes (hive.telemetry).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from hive import abi
from hive.cors import open_error, open_preflight
from hive.errors import ClientGone, HiveError, NodeFenced, RateLimited
from hive.gates import Gates
from hive.guestthreads import guest_pool
from hive.httprules import body_too_large, check_content_length, check_head, request_id_of
from hive.jwks import KeysNeeded
from hive.policy import CLAIMS_HEADER, claims_header
from hive.ratelimit import RateLimiter, retry_after
from hive.render import Reply, error_reply, guest_reply, internal_error_reply
from hive.runtime import Loaded, Runtime
from hive.telemetry import Telemetry

if TYPE_CHECKING:
    from hive.capabilities import Capabilities

OFFLOAD_AFTER_MS = 2.0  # a call that uses more CPU than this moves its function off the event loop
RETURN_AFTER_FAST_CALLS = 200  # consecutive calls under a quarter of that bring it back

# CPU time of the calling thread: a guest runs on it, and unlike the wall clock it does not grow while
# the thread waits for the core or the GIL (so contention a burning neighbour causes never makes a
# quick function look long).
_thread_time_ns = time.thread_time_ns
_CLAIMS = CLAIMS_HEADER.encode()
_RELAY_ERROR = (b"x-relay-error", b"true")
# The request headers begin() reads, by their index in its one pass.
_HOST = 5
_READ = {
    b"x-request-id": 0,
    b"content-length": 1,
    b"origin": 2,
    b"access-control-request-method": 3,
    b"access-control-request-headers": 4,
    b"host": _HOST,
}


class _HeaderMap(Mapping[str, str]):
    """Request headers by lowercase name, the first of repeated ones (what auth reads)."""

    __slots__ = ("_d",)

    def __init__(self, raw: abi.Headers) -> None:
        self._d = {k.decode("latin-1"): v.decode("latin-1") for k, v in reversed(raw)}

    def __getitem__(self, key: str) -> str:
        return self._d[key]

    def __iter__(self) -> Any:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)


class Invocation:
    """One request for a function. `reply` is set as soon as the outcome is known."""

    __slots__ = (
        "invoker",
        "method",
        "path",
        "query",
        "headers",
        "request_id",
        "loaded",
        "chunks",
        "size",
        "reply",
        "claims",
        "keys_needed",
        "started",
        "origin",
    )

    def __init__(self, invoker: Invoker, method: bytes, path: bytes, query: bytes, headers: abi.Headers) -> None:
        self.invoker = invoker
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.request_id = ""
        self.loaded: Loaded | None = None
        self.chunks: list[bytes] = []
        self.size = 0
        self.reply: Reply | None = None
        self.claims: bytes | None = None  # the verified JWT claims, for the x-hive-auth-claims header
        self.keys_needed: KeysNeeded | None = None  # admission waits for a JWKS fetch
        self.started = 0.0  # set for functions with I/O: their wall-clock limit counts from here
        self.origin: bytes | None = None  # a browser's Origin: CORS headers go on the reply

    def feed(self, chunk: bytes) -> bool:
        """Add body bytes. False once the invocation has its answer: the transport drops the rest."""
        if self.reply is not None:
            return False
        self.size += len(chunk)
        loaded = self.loaded
        assert loaded is not None
        if self.size > loaded.max_request_bytes:
            self.chunks = []
            self.refuse(body_too_large(loaded.max_request_bytes, "request body"))
            return False
        self.chunks.append(chunk)
        return True

    def lost(self) -> None:
        """The client went away before the whole body arrived."""
        if self.reply is None:
            self.refuse(ClientGone("the client disconnected before sending the whole body"))

    def finish(self) -> Reply | asyncio.Future[Reply]:
        """The reply, or a future of it: the invocation is suspended while its admission waits for keys,
        while it waits for a slot, or while its guest runs on a guest thread. Call it on the loop."""
        if self.reply is not None:
            return self.reply
        if self.keys_needed is not None:
            return asyncio.ensure_future(self._admit_then_run())
        chunks = self.chunks
        body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
        self.chunks = []
        invoker = self.invoker
        loaded = self.loaded
        assert loaded is not None
        if loaded.does_io:  # it may wait on fetch or KV: never on the loop
            return invoker.gates.enter(self, body)
        if loaded.name in invoker._offloaded:  # a function seen to run long: off the event loop
            return invoker.in_guest_thread(self.run, body)
        return self.run(body)

    async def _admit_then_run(self) -> Reply:
        need, self.keys_needed = self.keys_needed, None
        loaded = self.loaded
        assert need is not None and loaded is not None
        await loaded.auth.refresh(need)
        try:
            self.invoker.authorize(self, loaded)
        except HiveError as e:  # a second KeysNeeded is an outage: JwksUnavailable's 503
            self.refuse(e)
        r = self.finish()
        return r if isinstance(r, Reply) else await r

    def run(self, body: bytes, io: object = None) -> Reply:
        """Call the guest; on the loop or on a guest thread."""
        loaded = self.loaded
        assert loaded is not None
        try:
            resp = self.invoker.call(
                loaded, self.method, self.path, self.query, self.headers, body, self.request_id, self.claims, io
            )
        except HiveError as e:
            self.reply = self.error(e)
        except Exception:
            self.reply = self.server_error(
                internal_error_reply(self.method.decode("latin-1"), self.path.decode("latin-1"))
            )
        else:
            reply = self.reply = guest_reply(resp)
            if self.origin is not None and loaded.cors is not None:
                loaded.cors.decorate(reply, self.origin)
        return self.reply

    def refuse(self, e: HiveError) -> None:
        """Answer with an error before the guest ran (counted for the function when it is known)."""
        if self.loaded is not None:
            self.invoker.rejected(self.loaded, e, self.request_id)
        self.reply = self.error(e)

    def error(self, e: HiveError) -> Reply:
        return self.server_error(error_reply(e, self.method.decode("latin-1"), self.path.decode("latin-1")))

    def server_error(self, reply: Reply) -> Reply:
        """The server's own answer (not the guest's): marked for Supabase clients (FunctionsRelayError),
        and readable by the browser that asked (CORS)."""
        reply.headers.append(_RELAY_ERROR)
        if self.origin is not None:
            cors = self.loaded.cors if self.loaded is not None else None
            if cors is not None:
                cors.decorate(reply, self.origin)
            else:
                open_error(reply)
        return reply


class Invoker:
    # Cluster mode: set off the request path (hive.cluster.lease.FenceWatch) while this node is fenced.
    fenced = False

    def __init__(
        self,
        runtime: Runtime,
        limiter: RateLimiter,
        telemetry: Telemetry,
        admin_token: str | None = None,
        capabilities: Capabilities | None = None,
    ) -> None:
        self.runtime = runtime
        self.limiter = limiter
        self.telemetry = telemetry
        self.admin_token = admin_token
        self._token = (admin_token or "").encode()
        s = runtime.settings
        self._head_limits = (s.max_headers, s.max_header_bytes, s.max_url_bytes)
        self.offload_after_ns = int(OFFLOAD_AFTER_MS * 1e6)
        self._offloaded: dict[str, int] = {}  # function -> fast calls in a row since it went off the loop
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.gates = Gates(self, capabilities, s.io_threads)

    def begin(
        self, name: str, method: bytes, path: bytes, query: bytes, headers: abi.Headers, http_11: bool = True
    ) -> Invocation:
        """An invocation with its head checked and admitted; `reply` is already set when it was refused."""
        inv = Invocation(self, method, path, query, headers)
        found: list[bytes | None] = [None, None, None, None, None]
        size = hosts = 0
        for k, v in headers:  # one pass: the head's size and Host count, and the headers the core reads
            size += len(k) + len(v)
            i = _READ.get(k)
            if i is not None:
                if i == _HOST:
                    hosts += 1
                elif found[i] is None:
                    found[i] = v
        max_headers, max_header_bytes, max_url = self._head_limits
        url_bytes = len(path) + len(query) + (1 if query else 0)
        if url_bytes > max_url or len(headers) > max_headers or size > max_header_bytes or (http_11 and hosts != 1):
            err = check_head(
                len(headers), size, hosts, url_bytes, max_headers, max_header_bytes, max_url, http_11
            )  # the common case never gets here: one comparison each instead of a call
            if err is not None:
                inv.refuse(err)
                return inv
        rid, cl, origin, preflight, asked_headers = found
        inv.request_id = request_id_of(None if rid is None else rid.decode("latin-1"))
        inv.origin = origin
        try:
            if self.fenced:
                raise NodeFenced()
            rt = self.runtime
            rt.sync_for_request()  # one key read per loop turn: a deploy is live for the next request
            loaded = inv.loaded = rt.lookup(name)
            if loaded.does_io:
                inv.started = time.monotonic()
            if preflight is not None and origin is not None and method == b"OPTIONS":
                # A CORS preflight: a browser never sends credentials on one, so it never meets auth.
                if loaded.cors is not None:
                    inv.reply = loaded.cors.preflight(origin, asked_headers)
                return inv  # without a cors section, the function answers it
            try:
                self.authorize(inv, loaded)
            except KeysNeeded as need:  # finish() fetches the keys, then admits
                inv.keys_needed = need
                return inv
            check_content_length(None if cl is None else cl.decode("latin-1"), loaded.max_request_bytes, "request body")
        except HiveError as e:
            if inv.loaded is None and preflight is not None and origin is not None and method == b"OPTIONS":
                inv.reply = open_preflight(asked_headers)  # no function (404): the request that follows reads why
            elif inv.loaded is None:
                inv.reply = inv.error(e)
            else:
                inv.refuse(e)
        except Exception:
            inv.reply = inv.server_error(internal_error_reply(method.decode("latin-1"), path.decode("latin-1")))
        return inv

    def authorize(self, inv: Invocation, loaded: Loaded) -> None:
        """The caller's credentials and the function's rate limit; raises the refusal."""
        if not loaded.auth.public:
            claims = loaded.auth.check(_HeaderMap(inv.headers))
            if claims is not None:
                inv.claims = claims_header(claims)
        if loaded.rate is not None:
            wait = self.limiter.take(loaded.name, *loaded.rate)
            if wait:
                raise RateLimited(
                    f"over the rate limit of {loaded.rate[0]:g} requests per second",
                    headers={"retry-after": retry_after(wait)},
                )

    def admit(self, name: str, headers: abi.Headers | Mapping[str, str], request_id: str = "") -> Loaded:
        """The function's current version, once the caller passed its auth and rate limit (for callers
        outside an invocation: benchmarks and tests)."""
        raw = headers if isinstance(headers, list) else [(k.encode(), v.encode()) for k, v in headers.items()]
        inv = self.begin(name, b"POST", b"/", b"", [(b"host", b"local"), *raw])
        if inv.reply is not None:
            raise HiveError(inv.reply.body.decode())
        assert inv.loaded is not None
        return inv.loaded

    def rejected(self, loaded: Loaded, e: HiveError, request_id: str = "") -> None:
        """Count a request refused before the guest ran (auth, rate, body size)."""
        self.telemetry.invocation(
            loaded.name, loaded.record.version, e.status, time.perf_counter_ns(), request_id, e.code
        )

    def call(
        self,
        loaded: Loaded,
        method: bytes,
        raw_path: bytes,
        query: bytes,
        headers: abi.Headers,
        body: bytes,
        request_id: str | None = None,
        claims: bytes | None = None,
        io: object = None,
    ) -> abi.Response:
        headers = self.guest_headers(loaded.name, headers, claims)
        envelope = abi.encode_request(method, raw_path, query, headers, body)
        request_id = request_id or os.urandom(8).hex()
        cpu_started = _thread_time_ns()
        started = time.perf_counter_ns()
        rec = loaded.record
        rt = self.runtime
        try:
            resp, fuel = rt.invoke(loaded, envelope, request_id, io, cpu_started)
        except HiveError as e:
            self._observe(rec.name, _thread_time_ns() - cpu_started)
            self.telemetry.invocation(
                rec.name, rec.version, e.status, started, request_id, e.code, e.extra.get("fuel_used")
            )
            if rt.needs_refill:
                self._soon(rt.refill)  # off the request path
            raise
        # The offload policy reads the CPU clock again only when it could matter: a thread's CPU time
        # never grows faster than the wall clock, so a call quicker than the limit by the wall clock
        # is quick by CPU time too, and only a function already off the loop counts its quick calls.
        if not io and (rec.name in self._offloaded or time.perf_counter_ns() - started > self.offload_after_ns):
            self._observe(rec.name, _thread_time_ns() - cpu_started)
        if rt.needs_refill:
            self._soon(rt.refill)
        self.telemetry.invocation(rec.name, rec.version, resp.status, started, request_id, None, fuel)
        if fuel is not None:  # the host's figure, never one the guest made up
            resp.headers = [h for h in resp.headers if h[0] != b"x-hive-fuel-used"]
            resp.headers.append((b"x-hive-fuel-used", str(fuel).encode()))
        return resp

    def guest_headers(self, name: str, headers: abi.Headers, claims: bytes | None) -> abi.Headers:
        """The headers a guest may see. Dropped: any header carrying the admin token (a guest that saw it
        would control the server; counted), and a client's x-hive-auth-claims (only the host's, from
        a verified JWT, is added). One pass, no copy in the common case."""
        token = self._token
        for k, v in headers:
            if k == _CLAIMS or (token and token in v):
                break
        else:
            return headers if claims is None else [*headers, (_CLAIMS, claims)]
        if token and any(token in v for _, v in headers):
            self.telemetry.m.admin_token_stripped.labels(name).inc()
        kept = [(k, v) for k, v in headers if k != _CLAIMS and not (token and token in v)]
        if claims is not None:
            kept.append((_CLAIMS, claims))
        return kept

    # --- long-running functions, off the event loop ---

    def offload(self, loaded: Loaded) -> bool:
        """Whether this function's calls run in the guest thread pool."""
        return loaded.name in self._offloaded

    def in_guest_thread(self, fn: Any, *args: Any) -> asyncio.Future[Any]:
        """fn(*args) in the guest thread pool. Call it on the event loop."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self._executor is None:
            self._executor = guest_pool()
        return loop.run_in_executor(self._executor, fn, *args)

    def _observe(self, name: str, elapsed_ns: int) -> None:
        streak = self._offloaded.get(name)
        if elapsed_ns > self.offload_after_ns:
            self._offloaded[name] = 0
        elif streak is not None:
            if elapsed_ns * 4 > self.offload_after_ns:
                self._offloaded[name] = 0
            elif streak + 1 >= RETURN_AFTER_FAST_CALLS:
                self._offloaded.pop(name, None)
            else:
                self._offloaded[name] = streak + 1

    def _soon(self, fn: Any) -> None:
        """Run fn on the event loop soon, from the loop or from a guest thread."""
        try:
            asyncio.get_running_loop().call_soon(fn)
        except RuntimeError:
            if self._loop is None:
                raise
            self._loop.call_soon_threadsafe(fn)

    def close(self) -> None:
        """Wait for guest calls running in the thread pools, and stop them."""
        self.gates.close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
