"""The invoke path, independent of the HTTP layer: admit (version, auth, rate limit), then call.

The Starlette route uses it; so does the lean HTTP front end (workers/fastpath.py).

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
import ctypes
import os
import platform
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from hive import abi
from hive.errors import HiveError, RateLimited
from hive.ratelimit import RateLimiter, retry_after
from hive.runtime import Loaded, Runtime
from hive.telemetry import Telemetry

OFFLOAD_AFTER_MS = 2.0  # a call that uses more CPU than this moves its function off the event loop
RETURN_AFTER_FAST_CALLS = 200  # consecutive calls under a quarter of that bring it back
GUEST_THREADS = 2  # per worker
GUEST_THREAD_NICE = 10  # the loop thread (nice 0) gets about 90% of a contended core
GUEST_THREAD_SLICE_NS = 100_000  # EEVDF slice request: a guest thread yields the core to the loop quickly


class _SchedAttr(ctypes.Structure):
    _fields_ = [("size", ctypes.c_uint32), ("sched_policy", ctypes.c_uint32), ("sched_flags", ctypes.c_uint64),
                ("sched_nice", ctypes.c_int32), ("sched_priority", ctypes.c_uint32),
                ("sched_runtime", ctypes.c_uint64), ("sched_deadline", ctypes.c_uint64),
                ("sched_period", ctypes.c_uint64), ("sched_util_min", ctypes.c_uint32),
                ("sched_util_max", ctypes.c_uint32)]


_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}.get(platform.machine())

# CPU time of the calling thread: a guest runs on it, and unlike the wall clock it does not grow while
# the thread waits for the core or the GIL (so contention a burning neighbour causes never makes a
# quick function look long).
_thread_time_ns = time.thread_time_ns


def _lower_priority() -> None:
    """Run in each guest thread: a lower weight (nice), and where the kernel takes it (Linux 6.12+,
    EEVDF) a short slice, so the event loop thread gets the core back within ~0.1 ms when it wakes
    instead of waiting out a default slice (about 1.4 ms here) of a guest that burns CPU."""
    tid = threading.get_native_id()
    try:
        os.setpriority(os.PRIO_PROCESS, tid, GUEST_THREAD_NICE)
    except (OSError, AttributeError):  # pragma: no cover - not Linux
        return
    if _SYS_SCHED_SETATTR is None:  # pragma: no cover
        return
    attr = _SchedAttr(size=ctypes.sizeof(_SchedAttr), sched_policy=0, sched_nice=GUEST_THREAD_NICE,
                      sched_runtime=GUEST_THREAD_SLICE_NS)
    try:
        ctypes.CDLL(None, use_errno=True).syscall(_SYS_SCHED_SETATTR, tid, ctypes.byref(attr), 0)
    except (OSError, AttributeError):  # pragma: no cover - an older kernel refuses it: the nice stays
        pass


class Invoker:
    def __init__(self, runtime: Runtime, limiter: RateLimiter, telemetry: Telemetry,
                 admin_token: str | None = None) -> None:
        self.runtime = runtime
        self.admin_token = admin_token
        self._token = (admin_token or "").encode()
        self.limiter = limiter
        self.telemetry = telemetry
        self.offload_after_ns = int(OFFLOAD_AFTER_MS * 1e6)
        self._offloaded: dict[str, int] = {}  # function -> fast calls in a row since it went off the loop
        self._executor: ThreadPoolExecutor | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def admit(self, name: str, headers: Mapping[str, str], request_id: str = "") -> Loaded:
        """The function's current version, once the caller passed its auth and rate limit."""
        rt = self.runtime
        rt.sync()  # one key read; makes a deploy visible to the next request on every worker
        loaded = rt.lookup(name)
        try:
            if not loaded.auth.public:
                loaded.auth.check(headers)
            if loaded.rate is not None:
                wait = self.limiter.take(loaded.name, *loaded.rate)
                if wait:
                    raise RateLimited(f"over the rate limit of {loaded.rate[0]:g} requests per second",
                                      headers={"retry-after": retry_after(wait)})
        except HiveError as e:
            self.rejected(loaded, e, request_id)
            raise
        return loaded

    def rejected(self, loaded: Loaded, e: HiveError, request_id: str = "") -> None:
        """Count a request refused before the guest ran (auth, rate, body size)."""
        self.telemetry.invocation(loaded.name, loaded.record.version, e.status, time.perf_counter_ns(),
                                  request_id, e.code)

    def call(self, loaded: Loaded, method: bytes, raw_path: bytes, query: bytes, headers: abi.Headers,
             body: bytes, request_id: str | None = None) -> abi.Response:
        if self._token:
            headers = self.without_admin_token(loaded.name, headers)
        envelope = abi.encode_request(method, raw_path, query, headers, body)
        request_id = request_id or os.urandom(8).hex()
        cpu_started = _thread_time_ns()
        started = time.perf_counter_ns()
        rec = loaded.record
        rt = self.runtime
        try:
            resp, fuel = rt.invoke(loaded, envelope, request_id)
        except HiveError as e:
            self._observe(rec.name, _thread_time_ns() - cpu_started)
            self.telemetry.invocation(rec.name, rec.version, e.status, started, request_id, e.code,
                                      e.extra.get("fuel_used"))
            if rt.needs_refill:
                self._soon(rt.refill)  # off the request path
            raise
        self._observe(rec.name, _thread_time_ns() - cpu_started)
        self.telemetry.invocation(rec.name, rec.version, resp.status, started, request_id, None, fuel)
        if fuel is not None:  # the host's figure, never one the guest made up
            resp.headers = [h for h in resp.headers if h[0] != b"x-hive-fuel-used"]
            resp.headers.append((b"x-hive-fuel-used", str(fuel).encode()))
        return resp

    def without_admin_token(self, name: str, headers: abi.Headers) -> abi.Headers:
        """The headers a guest may see: any header carrying the admin token (Authorization: Bearer
        from a CLI or script, or any other) is dropped, and counted: a guest that saw it would
        control the server."""
        token = self._token
        for _, v in headers:
            if token in v:
                self.telemetry.m.admin_token_stripped.labels(name).inc()
                return [(k, v) for k, v in headers if token not in v]
        return headers

    # --- long-running functions, off the event loop ---

    def offload(self, loaded: Loaded) -> bool:
        """Whether this function's calls run in the guest thread pool."""
        return loaded.name in self._offloaded

    def submit(self, loaded: Loaded, method: bytes, raw_path: bytes, query: bytes, headers: abi.Headers,
               body: bytes, request_id: str | None = None) -> asyncio.Future[abi.Response]:
        """call() in the guest thread pool. Call it on the event loop."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        if self._executor is None:
            self._executor = ThreadPoolExecutor(GUEST_THREADS, thread_name_prefix="hive-guest",
                                                initializer=_lower_priority)
        return loop.run_in_executor(self._executor, self.call, loaded, method, raw_path, query, headers, body,
                                    request_id)

    async def acall(self, loaded: Loaded, method: bytes, raw_path: bytes, query: bytes, headers: abi.Headers,
                    body: bytes, request_id: str | None = None) -> abi.Response:
        """call(), on the loop or in the guest thread pool, as the policy says."""
        if loaded.name in self._offloaded:
            return await self.submit(loaded, method, raw_path, query, headers, body, request_id)
        return self.call(loaded, method, raw_path, query, headers, body, request_id)

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
        """Wait for guest calls running in the thread pool, and stop it."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
