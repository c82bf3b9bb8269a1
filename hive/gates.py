"""Invocations that may wait on I/O (fetch, KV): each runs on a guest thread with its own instance, at
most `max_concurrency` of a function at once per worker; more wait in a bounded queue, then get 503
`overloaded` with Retry-After. The event loop only starts them and hands their replies back.

Why threads: wasmtime-py has no async host calls and a Store must not be used by two threads at once,
so a guest that waits on the network blocks the thread that called it. Giving each in-flight
invocation its own thread and instance keeps the loop serving and never shares a Store.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from hive.errors import Overloaded, WallTimeout
from hive.guestthreads import GuestThreads, RunSlots
from hive.render import Reply

if TYPE_CHECKING:
    from hive.capabilities import Capabilities, InvocationIO
    from hive.invoke import Invocation, Invoker


@dataclass
class _Gate:
    in_flight: int = 0
    warming: int = 0  # instances being made for it in the background
    queue: deque[tuple[Invocation, bytes, asyncio.Future[Reply]]] = field(default_factory=deque)


class Gates:
    def __init__(self, invoker: Invoker, capabilities: Capabilities | None, threads: int) -> None:
        self.invoker = invoker
        self.capabilities = capabilities
        self.threads = threads
        self._gates: dict[str, _Gate] = {}
        self._pool: GuestThreads | None = None
        self.slots = RunSlots()  # how many of those threads run guest code at once

    def enter(self, inv: Invocation, body: bytes) -> Reply | asyncio.Future[Reply]:
        loaded = inv.loaded
        assert loaded is not None
        gate = self._gates.get(loaded.name)
        if gate is None:
            gate = self._gates[loaded.name] = _Gate()
        if gate.in_flight < loaded.max_concurrency:
            return self._start(inv, body, gate)
        if len(gate.queue) >= loaded.max_queue:
            inv.refuse(
                Overloaded(
                    f"function {loaded.name!r} has {loaded.max_concurrency} invocations in flight and "
                    f"{len(gate.queue)} waiting on this worker; retry, or raise limits.max_concurrency / max_queue",
                    headers={"retry-after": "1"},
                )
            )
            assert inv.reply is not None
            return inv.reply
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        gate.queue.append((inv, body, waiter))
        return waiter

    def _start(self, inv: Invocation, body: bytes, gate: _Gate) -> asyncio.Future[Reply]:
        loaded = inv.loaded
        assert loaded is not None
        gate.in_flight += 1
        caps = self.capabilities
        io = caps.prepare(loaded, inv.request_id, inv.started, self.slots) if caps is not None else None
        self.invoker._loop = asyncio.get_running_loop()  # for what its threads hand back to the loop
        pool = self._executor()
        fut = pool.submit(_run, inv, body, io)
        fut.add_done_callback(lambda _: self._done(loaded.name))
        if not loaded.idle and gate.warming == 0 and gate.in_flight < loaded.max_concurrency:
            # The next invocation should find a warm instance: make one now, off its path.
            gate.warming += 1
            pool.run_soon(self._warm, loaded, gate)
        return fut

    def _warm(self, loaded: Any, gate: _Gate) -> None:
        self.slots.take()  # instantiating runs guest start-up code under its own time limit
        try:
            self.invoker.runtime.add_instance(loaded)
        finally:
            self.slots.give()
            gate.warming -= 1

    def _done(self, name: str) -> None:
        gate = self._gates[name]
        gate.in_flight -= 1
        while gate.queue:
            inv, body, waiter = gate.queue.popleft()
            if waiter.cancelled():
                continue
            loaded = inv.loaded
            assert loaded is not None
            if time.monotonic() - inv.started > loaded.wall_timeout_ms / 1000:
                e = WallTimeout(
                    f"the invocation waited past its wall-clock limit of {loaded.wall_timeout_ms} ms "
                    "for a free slot; raise limits.max_concurrency or limits.wall_timeout_ms"
                )
                inv.refuse(e)
                assert inv.reply is not None
                waiter.set_result(inv.reply)
                continue
            self._start(inv, body, gate).add_done_callback(lambda f, w=waiter: w.done() or w.set_result(f.result()))  # type: ignore[misc]
            break

    def _executor(self) -> GuestThreads:
        if self._pool is None:
            self._pool = GuestThreads(self.threads)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None


def _run(inv: Invocation, body: bytes, io: InvocationIO | None) -> Reply:
    """On a guest thread: the invocation, within a run slot (given back while it waits, see
    hive.guestthreads.RunSlots)."""
    if io is not None and not io.begin():
        loaded = inv.loaded
        assert loaded is not None
        inv.refuse(
            WallTimeout(
                f"the invocation waited past its wall-clock limit of {loaded.wall_timeout_ms} ms for its "
                "turn to run (this worker's guests are busy); raise limits.wall_timeout_ms"
            )
        )
        assert inv.reply is not None
        return inv.reply
    try:
        return inv.run(body, io)
    finally:
        if io is not None:
            io.end()
