"""hive.pacing: bursts go on a few items per event-loop turn."""

from __future__ import annotations

import asyncio

from hive.pacing import PER_TURN, Turns


def test_a_batch_goes_on_a_few_items_per_loop_turn_in_order() -> None:
    """Hundreds of items taken in one loop iteration (upstream heads read, connections opened) must not
    all go on in the next one (the worker's other requests would wait for the whole batch): PER_TURN
    per iteration, in order."""
    loop = asyncio.new_event_loop()  # its run_forever after call_soon(stop) is exactly one iteration
    try:
        turns = Turns(loop)
        n = 3 * PER_TURN + 5
        taken = [turns.take() for _ in range(n)]  # all in one iteration
        assert all(t is None for t in taken[:PER_TURN])
        waiting = [t for t in taken if t is not None]
        assert len(waiting) == n - PER_TURN
        waiting[1].cancel()  # a fetch that timed out meanwhile gives its turn up
        released = []
        for _ in range(10):  # bounded: one loop iteration each
            loop.call_soon(loop.stop)
            loop.run_forever()
            released.append(sum(1 for t in waiting if t.done() and not t.cancelled()))
        assert released[0] == PER_TURN and released[-1] == len(waiting) - 1
        assert all(b - a <= PER_TURN for a, b in zip(released, released[1:], strict=False))
        assert [t.done() for t in waiting if not t.cancelled()] == [True] * (len(waiting) - 1)
    finally:
        loop.close()
