"""Run slots: at most RUNNING_GUESTS guests of I/O functions execute at once per worker, and a guest
that waits gives its slot up (hive.guestthreads.RunSlots, hive.capabilities.InvocationIO)."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator

import pytest

from hive.guestthreads import RUNNING_GUESTS, GuestThreads, RunSlots
from tests.io.guests import Result, fetch, io_guest, program, results
from tests.support import Server, start_server

BOUND = 10.0  # seconds: the most any wait here lasts, so a broken test cannot hang


def test_slots_are_bounded_and_given_back() -> None:
    slots = RunSlots(2)
    assert slots.take(0) and slots.take(0)
    assert not slots.take(0)  # both taken: a third waits, here not at all
    slots.give()
    assert slots.take(0)
    assert not slots.take(0.01)


def test_a_slot_given_back_goes_to_the_longest_waiter() -> None:
    slots = RunSlots(1)
    assert slots.take()
    order: list[int] = []
    queued = threading.Semaphore(0)

    def waiter(i: int) -> None:
        queued.release()
        assert slots.take(BOUND)
        order.append(i)
        slots.give()

    threads = []
    for i in range(5):  # queued one after another: each is waiting before the next starts
        t = threading.Thread(target=waiter, args=(i,))
        t.start()
        assert queued.acquire(timeout=BOUND)
        for _ in range(int(BOUND / 0.001)):  # bounded: until this waiter sits in the queue
            if slots.waiting == i + 1:
                break
            threading.Event().wait(0.001)
        threads.append(t)
    slots.give()
    for t in threads:
        t.join(BOUND)
    assert order == [0, 1, 2, 3, 4]
    assert slots.take(0)  # and the slot is free again at the end


def test_a_timed_out_waiter_leaves_no_slot_behind() -> None:
    slots = RunSlots(1)
    assert slots.take()
    assert not slots.take(0.01)  # gave up: it must not be handed the slot later
    slots.give()
    assert slots.take(0)
    assert not slots.take(0)


def test_guest_threads_hand_results_and_errors_back_to_the_loop() -> None:
    pool = GuestThreads(limit=3)
    gate = threading.Barrier(3, timeout=BOUND)  # three jobs that can only finish together: three threads

    def together(i: int) -> tuple[int, str]:
        gate.wait()
        return i, threading.current_thread().name

    def boom() -> None:
        raise ValueError("from a guest thread")

    async def go() -> tuple[list[tuple[int, str]], str]:
        results = await asyncio.gather(*[pool.submit(together, i) for i in range(3)])
        try:
            await pool.submit(boom)
        except ValueError as e:
            return list(results), str(e)
        return list(results), "no error"

    try:
        results, error = asyncio.run(go())
    finally:
        pool.shutdown()
    assert [i for i, _ in results] == [0, 1, 2] and len({name for _, name in results}) == 3
    assert error == "from a guest thread"


def test_guest_threads_never_exceed_their_limit() -> None:
    pool = GuestThreads(limit=2)
    seen: set[str] = set()

    def job() -> None:
        seen.add(threading.current_thread().name)

    async def go() -> None:
        await asyncio.gather(*[pool.submit(job) for _ in range(50)])

    try:
        asyncio.run(go())
    finally:
        pool.shutdown()
    assert 1 <= len(seen) <= 2


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("slots") / "data", workers=1)
    manifest = {"allowed_hosts": [upstream], "limits": {"max_concurrency": 64, "max_queue": 64}}
    assert s.deploy("waiter", io_guest(), json.dumps(manifest)).status_code == 201
    yield s
    s.stop()


@pytest.mark.slow
def test_waiting_guests_give_their_slots_to_others(server: Server, upstream: str) -> None:
    """Three times RUNNING_GUESTS invocations, each waiting on an upstream that answers only once all of
    them are waiting there at once: that happens only if every waiting guest gave its slot up."""
    n = 3 * RUNNING_GUESTS
    body = program(("fetch", fetch(f"{upstream}/gather?id=slots&n={n}")))
    host, port = server.url.removeprefix("http://").split(":")

    async def one() -> bytes:
        r, w = await asyncio.open_connection(host, int(port))
        w.write(
            b"POST /api/v1/edge/waiter HTTP/1.1\r\nhost: t\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        data = await asyncio.wait_for(r.read(), 60)
        w.close()
        return data

    async def burst() -> list[bytes]:
        return list(await asyncio.gather(*[one() for _ in range(n)]))

    answers = asyncio.run(burst())
    bodies = []
    for data in answers:
        head, _, payload = data.partition(b"\r\n\r\n")
        assert head.split(b" ", 2)[1] == b"200", data[:300]
        (res,) = results(payload)
        assert isinstance(res, Result)
        bodies.append(res.response().body)
    assert bodies == [b"gathered"] * n, bodies
