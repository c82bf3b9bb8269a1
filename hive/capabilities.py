"""What a guest may ask the host for beyond computing: outbound fetch and KV stores.

A capability has a lifecycle (as in Spin): `Capabilities` is set up once per worker after fork (the
outbound connection pools, the KV handle) and torn down with it; grants are checked at deploy
(hive.manifest); `prepare` makes the per-invocation `InvocationIO` (its fetch budget and wall-clock
deadline) that the sandbox's host calls use (hive.sandbox.host). A refusal is an error result the
guest can handle, never a trap.

Threads: an invocation with I/O runs on a guest thread (hive.invoke). A fetch runs as a coroutine on
the worker's event loop; the guest thread waits on its future, so the loop keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import Future, InvalidStateError
from typing import TYPE_CHECKING

from hive import abi, hostio
from hive.errors import AbiViolation, HiveError, WallTimeout
from hive.kv import KvBackend
from hive.outbound import FetchBudget, FetchLimits, FetchRecord, FetchRefused, FetchRequest, HostRule, Outbound
from hive.settings import Settings
from hive.telemetry import Telemetry

if TYPE_CHECKING:
    from hive.guestthreads import RunSlots
    from hive.runtime import Loaded

log = logging.getLogger("hive.capabilities")


class Capabilities:
    def __init__(self, settings: Settings, kv: KvBackend, telemetry: Telemetry) -> None:
        self.settings = settings
        self.kv = kv
        self.telemetry = telemetry
        # Enough connections for every in-flight invocation of a function to have one.
        self.outbound = Outbound(
            ca_file=settings.outbound_ca_file, max_connections_per_function=max(100, settings.io_threads)
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop fetches run on: the worker's, once it runs."""
        self.loop = loop
        self._loop_thread = threading.get_ident()

    def prepare(self, loaded: Loaded, request_id: str, started: float, slots: RunSlots | None = None) -> InvocationIO:
        return InvocationIO(self, loaded, request_id, started + loaded.wall_timeout_ms / 1000, slots)

    async def aclose(self) -> None:
        await self.outbound.aclose()
        self.kv.close()

    def record(self, loaded: Loaded, request_id: str, records: tuple[FetchRecord, ...]) -> None:
        for r in records:
            self.telemetry.outbound(loaded.name, loaded.record.version, request_id, r)


class InvocationIO:
    """One invocation's view of the capabilities (hive.sandbox.host's GuestIO)."""

    __slots__ = ("caps", "loaded", "request_id", "deadline", "budget", "slots", "_running")

    def __init__(
        self, caps: Capabilities, loaded: Loaded, request_id: str, deadline: float, slots: RunSlots | None = None
    ) -> None:
        self.caps = caps
        self.loaded = loaded
        self.request_id = request_id
        self.deadline = deadline
        self.budget = FetchBudget()
        self.slots = slots  # the worker's run slots (hive.guestthreads.RunSlots), None for no bound
        self._running = False

    def remaining(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    # --- run slots: on the guest thread, around the guest's execution and its waits ---

    def begin(self) -> bool:
        """Take a run slot before the guest first runs; False if the wall clock ran out meanwhile."""
        if self.slots is None or self._running:
            return True
        self._running = self.slots.take(self.remaining())
        return self._running

    def pause(self) -> None:
        """The guest is about to wait (hive.sandbox.guest): its slot goes to the next guest."""
        if self._running:
            self._running = False
            assert self.slots is not None
            self.slots.give()

    def resume(self) -> None:
        """The wait is over: a slot again before the guest's execution clock restarts."""
        if not self.begin():
            raise WallTimeout(
                f"the invocation ran past its wall-clock limit of {self.loaded.wall_timeout_ms} ms waiting "
                "for its turn to run (this worker's guests are busy); raise limits.wall_timeout_ms"
            )

    def end(self) -> None:
        self.pause()

    def timeout_message(self) -> str:
        return (
            f"the invocation ran past its wall-clock limit of {self.loaded.wall_timeout_ms} ms while it "
            "waited on I/O; raise limits.wall_timeout_ms or use faster upstreams"
        )

    # --- fetch ---

    def fetch_start(self, record: bytes) -> Future[bytes] | bytes:
        loaded = self.loaded
        try:
            call = hostio.decode_fetch(record)
        except AbiViolation as e:
            return hostio.error("bad_request", f"malformed fetch record: {e.message}")
        if not loaded.rules:
            return hostio.error(
                "host_not_allowed",
                (
                    f'function {loaded.name!r} may not fetch: grant hosts with "allowed_hosts" in its deploy '
                    "manifest or allowed_hosts in hive.toml [permissions]"
                ),
            )
        caps = self.caps
        if caps.loop is None or threading.get_ident() == caps._loop_thread:
            return hostio.error("no_io", "fetch is not available on the event loop thread")
        req = FetchRequest(
            call.method.decode("latin-1"),
            call.url.decode("utf-8", "replace"),
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in call.headers],
            call.body,
        )
        # One hop to the loop, where the fetch runs as a task; the guest thread waits on `fut`.
        # (asyncio.run_coroutine_threadsafe does the same with a second future chained both ways.)
        fut: Future[bytes] = Future()
        caps.loop.call_soon_threadsafe(self._begin, req, call.flags, fut)
        return fut

    def _begin(self, req: FetchRequest, flags: int, fut: Future[bytes]) -> None:
        """On the loop. The guest cancels `fut` when its invocation ends first: that cancels the task."""
        if fut.cancelled():
            return
        loop = self.caps.loop
        assert loop is not None
        task = loop.create_task(self._fetch(req, flags))
        task.add_done_callback(lambda t: _settle(fut, t))
        fut.add_done_callback(lambda f: f.cancelled() and loop.call_soon_threadsafe(task.cancel))

    async def _fetch(self, req: FetchRequest, flags: int = 0) -> bytes:
        loaded, caps = self.loaded, self.caps
        try:
            r = await caps.outbound.fetch(loaded.name, loaded.rules, req, loaded.fetch_limits, self.budget)
        except FetchRefused as e:
            caps.record(loaded, self.request_id, e.records)
            log.info(
                "[%s v%d fetch %s] refused %s: %s",
                loaded.name,
                loaded.record.version,
                self.request_id,
                e.code,
                e.message,
            )
            return hostio.error(e.code, e.message)
        except Exception:
            log.exception("fetch failed unexpectedly for %s", loaded.name)
            return hostio.error("internal_error", "the fetch failed inside the server")
        caps.record(loaded, self.request_id, r.records)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in r.headers]
        # Asked for (hostio.FETCH_FINAL_URL): the hops followed (one record per hop) and the final URL.
        final = (len(r.records) - 1, r.url) if flags & hostio.FETCH_FINAL_URL else None
        return hostio.fetched(abi.Response(r.status, headers, r.body), final)

    # --- KV ---

    def kv(self, record: bytes) -> bytes:
        try:
            call = hostio.decode_kv(record)
        except AbiViolation as e:
            return hostio.error("invalid_argument", f"malformed KV record: {e.message}")
        store = call.store.decode("utf-8", "replace")
        if store not in self.loaded.kv_stores:
            return hostio.error(
                "store_not_granted",
                (
                    f'function {self.loaded.name!r} was not granted the KV store {store!r}: add it to "kv" in '
                    "its deploy manifest or kv in hive.toml [permissions]"
                ),
            )
        backend = self.caps.kv
        ttl = call.ttl_ms / 1000 if call.ttl_ms else None
        try:
            if call.op == "get":
                return hostio.kv_get(backend.get(store, call.key))
            if call.op == "set":
                backend.set(store, call.key, call.value, ttl)
                return hostio.kv_done()
            if call.op == "delete":
                return hostio.kv_deleted(backend.delete(store, call.key))
            if call.op == "list":
                page = backend.list(store, call.key, call.cursor or None, call.limit)
                return hostio.kv_keys(page.keys, page.next_cursor)
            return hostio.kv_number(backend.incr(store, call.key, call.delta, ttl))
        except HiveError as e:
            return hostio.error(e.code, e.message)


def _settle(fut: Future[bytes], task: asyncio.Task[bytes]) -> None:
    """The task's result to the guest thread's future (_fetch returns error values, never raises, but
    for a cancellation)."""
    try:
        if task.cancelled():
            fut.cancel()
        elif (exc := task.exception()) is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(task.result())
    except InvalidStateError:  # the guest cancelled it meanwhile
        pass


def fetch_limits(spec: object | None) -> FetchLimits:
    """The manifest's limits.fetch over the defaults."""
    if spec is None:
        return FetchLimits()
    given = {k: getattr(spec, k) for k in FetchLimits.__dataclass_fields__ if getattr(spec, k, None) is not None}
    return FetchLimits(**given)


def rules_of(allowed_hosts: list[str]) -> tuple[HostRule, ...]:
    from hive.outbound import parse_allowed_hosts

    return parse_allowed_hosts(allowed_hosts)
