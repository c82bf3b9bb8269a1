"""The threads long-running guests run on: a small pool per worker, at a lower scheduling priority
than the event loop thread, so a guest that burns CPU never holds the loop off its core for long.

RunSlots bounds how many guests of I/O functions *execute* at once per worker. Hundreds of them
may be in flight, each on its own thread, but nearly all of that time is spent waiting; a guest
gives its slot up while it waits and takes one again before it resumes. Without the bound, a burst
of upstream answers makes hundreds of threads runnable together: they fight the event loop for the
GIL and the core, and the loop's other requests stall. (Waiting for a slot, like waiting for the GIL,
costs a guest none of its time limit: that is CPU time of its thread, hive.sandbox.guest.)
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
import os
import platform
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from queue import SimpleQueue
from typing import Any, TypeVar

log = logging.getLogger("hive.guestthreads")
T = TypeVar("T")

GUEST_THREADS = 2  # per worker
RUNNING_GUESTS = 4  # per worker: guests of I/O functions that execute at once (the others wait or sleep)
GUEST_THREAD_NICE = 10  # the loop thread (nice 0) gets about 90% of a contended core
GUEST_THREAD_SLICE_NS = 100_000  # EEVDF slice request: a guest thread yields the core to the loop quickly


class _SchedAttr(ctypes.Structure):
    _fields_ = [
        ("size", ctypes.c_uint32),
        ("sched_policy", ctypes.c_uint32),
        ("sched_flags", ctypes.c_uint64),
        ("sched_nice", ctypes.c_int32),
        ("sched_priority", ctypes.c_uint32),
        ("sched_runtime", ctypes.c_uint64),
        ("sched_deadline", ctypes.c_uint64),
        ("sched_period", ctypes.c_uint64),
        ("sched_util_min", ctypes.c_uint32),
        ("sched_util_max", ctypes.c_uint32),
    ]


_SYS_SCHED_SETATTR = {"x86_64": 314, "aarch64": 274}.get(platform.machine())


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)  # once: each CDLL is a small reference cycle left to the collector


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
    attr = _SchedAttr(
        size=ctypes.sizeof(_SchedAttr),
        sched_policy=0,
        sched_nice=GUEST_THREAD_NICE,
        sched_runtime=GUEST_THREAD_SLICE_NS,
    )
    try:
        _libc().syscall(_SYS_SCHED_SETATTR, tid, ctypes.byref(attr), 0)
    except (OSError, AttributeError):  # pragma: no cover - an older kernel refuses it: the nice stays
        pass


def guest_pool(threads: int = GUEST_THREADS) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="hive-guest", initializer=_lower_priority)


class GuestThreads:
    """The threads of I/O functions' invocations: up to `limit`, started when none is idle, then kept.

    What a ThreadPoolExecutor with loop.run_in_executor does, with one hand-off each way instead of a
    concurrent future chained to an asyncio one (about 30 us of CPU less per invocation): the job goes
    in a SimpleQueue, its result comes back with one call_soon_threadsafe."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._jobs: SimpleQueue[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any] | None] | None] = (
            SimpleQueue()
        )
        self._idle = threading.Semaphore(0)  # one count per thread waiting for a job
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """fn(*args) on a guest thread; the future (of the calling loop) gets its result. On the loop."""
        fut: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._put((fn, args, fut))
        return fut

    def run_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """fn(*args) on a guest thread, for its effect only (its exception is logged)."""
        self._put((fn, args, None))

    def _put(self, job: tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any] | None]) -> None:
        self._jobs.put(job)
        if self._idle.acquire(blocking=False):
            return  # an idle thread takes it
        with self._lock:
            if len(self._threads) < self.limit:
                t = threading.Thread(target=self._work, name=f"hive-guest-io_{len(self._threads)}", daemon=True)
                self._threads.append(t)
                t.start()

    def _work(self) -> None:
        _lower_priority()
        jobs = self._jobs
        while True:
            job = jobs.get()
            if job is None:
                return
            fn, args, fut = job
            try:
                result = fn(*args)
            except BaseException as e:
                if fut is None:
                    log.exception("a guest thread's job failed")
                else:
                    _hand_back(fut, _fail, e)
            else:
                if fut is not None:
                    _hand_back(fut, _resolve, result)
            del job, fn, args, fut
            self._idle.release()

    def shutdown(self) -> None:
        """Let the jobs already queued finish, then stop every thread."""
        with self._lock:
            threads, self._threads = self._threads, []
        for _ in threads:
            self._jobs.put(None)
        for t in threads:
            t.join()


def _hand_back(fut: asyncio.Future[Any], how: Callable[[asyncio.Future[Any], Any], None], value: Any) -> None:
    try:
        fut.get_loop().call_soon_threadsafe(how, fut, value)
    except RuntimeError:  # the loop is closed: the worker is stopping, nobody waits for this any more
        pass


def _resolve(fut: asyncio.Future[Any], result: Any) -> None:
    if not fut.done():
        fut.set_result(result)


def _fail(fut: asyncio.Future[Any], e: BaseException) -> None:
    if not fut.done():
        fut.set_exception(e)


class RunSlots:
    """Taken by a guest thread before it runs guest code, given back while it waits. Strictly first
    come, first served: a slot given back passes straight to the longest waiter."""

    def __init__(self, size: int = RUNNING_GUESTS) -> None:
        self.size = size
        self._lock = threading.Lock()
        self._free = size
        self._waiters: deque[threading.Lock] = deque()

    def take(self, timeout: float | None = None) -> bool:
        with self._lock:
            if self._free and not self._waiters:
                self._free -= 1
                return True
            waiter = threading.Lock()
            waiter.acquire()
            self._waiters.append(waiter)
        if waiter.acquire(timeout=-1 if timeout is None else max(timeout, 0.0)):
            return True  # give() handed its slot over
        with self._lock:
            try:
                self._waiters.remove(waiter)
            except ValueError:
                return True  # handed over just as the wait timed out
            return False

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def give(self) -> None:
        with self._lock:
            if self._waiters:
                self._waiters.popleft().release()
            else:
                self._free += 1
