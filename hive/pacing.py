"""Work that arrives in a burst goes on a few items per turn of the event loop.

Hundreds of connections opened in the same millisecond, or hundreds of upstreams answering together,
would otherwise be handled in one loop iteration, and every other request of the worker (a hello on
a kept-alive connection) would wait for the whole batch. The loop polls its sockets between
iterations, so pacing a batch PER_TURN items at a time serves the worker's other requests in
between. Loop thread only; nothing here blocks or sleeps.
"""

from __future__ import annotations

import asyncio
import collections
import weakref

PER_TURN = 16  # items of one kind that go on in one loop iteration; the rest wait for the next ones


class Turns:
    """One kind of paced work on one loop: `take()` says go on now (None) or gives a future that a
    later iteration sets, in arrival order."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.used = 0
        self.waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self.armed = False

    def take(self) -> asyncio.Future[None] | None:
        """None: go on now; else a future to wait for, set in a later iteration."""
        if not self.armed:
            self.armed = True
            self.loop.call_soon(self._next)
        if self.used < PER_TURN and not self.waiting:
            self.used += 1
            return None
        turn = self.loop.create_future()
        self.waiting.append(turn)
        return turn

    def _next(self) -> None:
        self.used, self.armed = 0, False
        waiting = self.waiting
        while waiting and self.used < PER_TURN:
            turn = waiting.popleft()
            if not turn.done():  # given up meanwhile (a fetch's timeout, a closed connection)
                turn.set_result(None)
                self.used += 1
        if waiting:
            self.armed = True
            self.loop.call_soon(self._next)


# One Turns per (loop, kind): a kind's items pace each other, never another kind's.
_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Turns]] = weakref.WeakKeyDictionary()


def turns(kind: str) -> Turns:
    """The running loop's Turns for one kind of work ("connections", "fetch completions", ...)."""
    loop = asyncio.get_running_loop()
    kinds = _turns.get(loop)
    if kinds is None:
        kinds = _turns[loop] = {}
    t = kinds.get(kind)
    if t is None:
        t = kinds[kind] = Turns(loop)
    return t
