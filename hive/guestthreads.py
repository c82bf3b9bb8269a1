"""The threads long-running guests run on: a small pool per worker, at a lower scheduling priority
than the event loop thread, so a guest that burns CPU never holds the loop off its core for long.

RunSlots bounds how many guests of I/O functions *execute* at once per worker. Hundreds of them
may be in flight, each on its own thread, but nearly all of that time is spent waiting; a guest
gives its slot up while it waits and takes one again before it resumes. Without the bound, a burst
of upstream answers makes hundreds of threads runnable together: they fight the event loop for the
GIL and the core (the loop's other requests stall), and each one's execution clock (an epoch
deadline, which ticks with the wall clock) runs out while it only waits for its turn.
"""

from __future__ import annotations

import ctypes
import os
import platform
import threading
from collections import deque
from concurrent.futures import ThreadPoolExecutor

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
        ctypes.CDLL(None, use_errno=True).syscall(_SYS_SCHED_SETATTR, tid, ctypes.byref(attr), 0)
    except (OSError, AttributeError):  # pragma: no cover - an older kernel refuses it: the nice stays
        pass


def guest_pool(threads: int = GUEST_THREADS) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="hive-guest", initializer=_lower_priority)


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
