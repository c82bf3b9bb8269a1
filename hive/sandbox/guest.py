"""One warm guest: a Store with its limits, an instance, and the ABI v1 call."""

from __future__ import annotations

import contextlib
import ctypes
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from wasmtime import ExitTrap, Func, Memory, Trap, TrapCode, WasmtimeError

from hive import abi
from hive.errors import AbiViolation, FuelExhausted, GuestError, GuestExit, GuestTrap, ResponseTooLarge, Timeout
from hive.sandbox import fastcall, host
from hive.sandbox.engine import CompiledModule, Sandbox

_MIN_REQUEST_BUFFER = 4096
_thread_time_ns = time.thread_time_ns
# Room for status and headers on top of the body limit.
_ENVELOPE_OVERHEAD = 1 << 20


@dataclass(frozen=True)
class GuestLimits:
    timeout_ms: int = 100
    memory_bytes: int = 128 << 20
    max_response_bytes: int = 6 << 20
    table_elements: int = 100_000
    fuel: int | None = None  # per invocation; needs a module compiled with fuel


class GuestInstance:
    __slots__ = (
        "compiled",
        "limits",
        "ctx",
        "store",
        "memory",
        "_alloc",
        "_free",
        "_handle",
        "_ticks",
        "_ticker",
        "req_ptr",
        "req_cap",
        "calls",
        "_fuel",
        "fuel_used",
        "_fstore",
        "_fmem",
        "_falloc",
        "_fhandle",
        "_max_envelope",
        "_sandbox",
        "_budget",
        "_on_deadline",
        "_view",
        "_view_size",
        "_deadline_at",
    )

    def __init__(self, sandbox: Sandbox, compiled: CompiledModule, limits: GuestLimits, ctx: host.GuestContext) -> None:
        self.compiled = compiled
        self.limits = limits
        self.ctx = ctx
        self._ticks = sandbox.limit_ticks(limits.timeout_ms)
        self._ticker = sandbox.ticker
        self._sandbox = sandbox
        store = host.new_store(compiled.engine)
        store.set_limits(
            memory_size=limits.memory_bytes, table_elements=limits.table_elements, instances=1, tables=4, memories=1
        )
        store.set_epoch_deadline(self._ticks + self._ticker.lag())
        self._fuel = limits.fuel if compiled.fuel else None
        self.fuel_used: int | None = None
        if compiled.fuel:
            store.set_fuel(limits.fuel or 1 << 62)  # start-up code gets the budget too
        self.store = store
        ctx.memory = None  # host calls during start-up find the memory through the caller
        host.set_current(ctx)
        with _guest_errors("instantiation"):
            instance = compiled.pre.instantiate(store)
            exports = instance.exports(store)
            if compiled.has_initialize:
                init = exports["_initialize"]
                assert isinstance(init, Func)
                init(store)
        memory, alloc, handle = exports[abi.MEMORY_EXPORT], exports[abi.ALLOC_EXPORT], exports[abi.HANDLE_EXPORT]
        assert isinstance(memory, Memory) and isinstance(alloc, Func) and isinstance(handle, Func)
        self.memory, self._alloc, self._handle = memory, alloc, handle
        free = exports[abi.FREE_EXPORT] if compiled.has_free else None
        self._free = free if isinstance(free, Func) else None
        self.req_ptr = 0
        self.req_cap = 0
        self.calls = 0
        # The request path calls through hive.sandbox.fastcall (wasmtime's C API with preallocated
        # arrays); the public objects above stay for everything else.
        self._fstore = fastcall.FastStore(store)
        # From here on the time limit is CPU time (start-up code keeps the plain deadline).
        self._budget = _CpuBudget(limits.timeout_ms, sandbox)
        self._on_deadline = fastcall.on_epoch_deadline(store, self._budget.extend)
        self._fmem = fastcall.FastMemory(self._fstore, memory)
        self._falloc = fastcall.FastFunc(self._fstore, alloc, ["i32"], ["i32"])
        self._fhandle = fastcall.FastFunc(self._fstore, handle, ["i32", "i32"], ["i64"])
        self._max_envelope = limits.max_response_bytes + _ENVELOPE_OVERHEAD
        ctx.memory = self._fmem
        ctx.waiting = self._waiting
        # The request buffer, now rather than on the first request: hive_alloc runs once here, and
        # its code and the guest's heap are paged in before anyone waits on it.
        with _guest_errors("the warm-up (hive_alloc)"):
            self._reserve(_MIN_REQUEST_BUFFER)
        self._view_size = -1
        self._view = self._map_memory()
        self._deadline_at = -1  # the ticker's count when call() last set the epoch deadline

    def _map_memory(self) -> memoryview:
        """Guest memory as a memoryview: the request and the response are copied by slicing, not by
        two ctypes calls. Only memory.grow may move the mapping, and it always changes the size:
        call() maps again whenever the size it reads after the handler differs from this view's."""
        mem = self._fmem
        size = mem.size()
        if size != self._view_size:
            self._view_size = size
            self._view = memoryview((ctypes.c_ubyte * size).from_address(mem.base())).cast("B")
        return self._view

    def _reserve(self, n: int) -> int:
        if n <= self.req_cap:
            return self.req_ptr
        cap = max(_MIN_REQUEST_BUFFER, 1 << (n - 1).bit_length())
        ptr = self._falloc.call1(cap) & 0xFFFF_FFFF
        if ptr == 0:
            raise AbiViolation(f"hive_alloc({cap}) returned 0: the guest is out of memory")
        if ptr + cap > self._fmem.size():
            raise AbiViolation(f"hive_alloc({cap}) returned {ptr}, outside guest memory")
        if self._free is not None and self.req_cap:
            self._free(self.store, self.req_ptr, self.req_cap)
        self.req_ptr, self.req_cap = ptr, cap
        return ptr

    @contextlib.contextmanager
    def _waiting(self, io: object) -> Iterator[None]:
        """Around a host call that blocks on I/O: a waiting thread uses no CPU time, so the limit is
        untouched; the epoch deadline (which the wall clock moves) is set again to what is left of it
        when the guest resumes, so the wait costs no deadline callback."""
        pause, resume = getattr(io, "pause", None), getattr(io, "resume", None)
        if pause is not None:
            pause()  # the invocation's run slot (hive.guestthreads.RunSlots) goes to another guest meanwhile
        try:
            yield
        finally:
            if resume is not None:
                resume()  # waits for a slot (raises WallTimeout past the wall clock) before the clock restarts
            self._fstore.set_epoch_deadline(self._budget.extend() or 0)

    def call(
        self, envelope: bytes, request_id: str = "", io: object = None, cpu_started_ns: int | None = None
    ) -> abi.Response:
        """Run one request (with the invocation's I/O capabilities, if any). `cpu_started_ns`: this
        thread's CPU time (time.thread_time_ns) when the invocation began, if the caller read it. Any
        exception means the instance must be discarded."""
        fstore = self._fstore
        self.calls += 1
        budget = self._budget
        budget.started_ns = _thread_time_ns() if cpu_started_ns is None else cpu_started_ns
        budget.expired = False
        ticker = self._ticker
        now = ticker.ticks
        if now != self._deadline_at or budget.extended:
            # Set again only once the epoch moved (or a callback or a wait changed it): within one tick
            # the deadline left by the last call is the same. Being a tick early costs nothing but a
            # deadline callback, which gives the call the rest of its CPU time (_CpuBudget).
            fstore.set_epoch_deadline(self._ticks + ticker.lag())
            self._deadline_at = now
            budget.extended = False
        fuel = self._fuel
        if fuel is not None:
            fstore.set_fuel(fuel)
        ctx = self.ctx
        ctx.begin_call(request_id)
        ctx.memory = self._fmem
        ctx.io = io
        host.set_current(ctx)
        try:
            n = len(envelope)
            if n > self.req_cap:
                ptr = self._reserve(n)
                view = self._map_memory()  # hive_alloc may have grown the memory
            else:
                ptr, view = self.req_ptr, self._view
            view[ptr : ptr + n] = envelope
            packed = self._fhandle.call2(ptr, n)
        except BaseException as e:
            if budget.expired:
                raise Timeout("the handler ran past its time limit") from None
            _guest_error(e, "the handler")
            raise
        finally:
            ctx.end_call()
            ctx.io = None
            if fuel is not None:
                self.fuel_used = fuel - fstore.get_fuel()
        packed &= 0xFFFF_FFFF_FFFF_FFFF  # abi.split_packed, inline
        rptr, rlen = packed >> 32, packed & 0xFFFF_FFFF
        view = self._map_memory()  # one size read; a new mapping only when the handler grew the memory
        if rptr + rlen > self._view_size:
            raise AbiViolation(
                f"the response ({rlen} bytes at {rptr}) lies outside guest memory ({self._view_size} bytes)"
            )
        if rlen > self._max_envelope:
            raise ResponseTooLarge(
                f"the response of {rlen} bytes exceeds the limit of {self.limits.max_response_bytes}"
            )
        return abi.decode_response(view[rptr : rptr + rlen].tobytes(), self.limits.max_response_bytes)


class _CpuBudget:
    """A call's time limit as CPU time of the thread it runs on. The epoch deadline follows the wall
    clock, which also moves while the thread waits for a core or for the GIL (in a host call, or
    behind other guest threads): when the deadline is reached, the guest goes on for what is left of
    its CPU time, and ends once none is."""

    __slots__ = ("limit_ms", "started_ns", "expired", "extended", "_sandbox")

    def __init__(self, limit_ms: int, sandbox: Sandbox) -> None:
        self.limit_ms = limit_ms
        self.started_ns = _thread_time_ns()
        self.expired = False
        self.extended = False  # the deadline was set from here: the next call sets it afresh
        self._sandbox = sandbox

    def extend(self) -> int | None:
        """Ticks from now for the CPU time left (on the guest's thread), or None when it is used up."""
        self.extended = True
        left_ms = self.limit_ms - (_thread_time_ns() - self.started_ns) / 1e6
        if left_ms <= 0:
            self.expired = True
            return None
        return self._sandbox.deadline_ticks(left_ms)


def _guest_error(e: BaseException, phase: str) -> None:
    """Raise the Hive error for a wasmtime failure (as _guest_errors does); return for anything else."""
    _guest_errors(phase).__exit__(type(e), e, None)


class _guest_errors:
    """Map wasmtime failures to Hive errors."""

    def __init__(self, phase: str) -> None:
        self.phase = phase

    def __enter__(self) -> None:
        return None

    def __exit__(self, et: type | None, e: BaseException | None, tb: object) -> Literal[False]:
        if e is None or isinstance(e, GuestError):
            return False
        if isinstance(e, ExitTrap):
            raise GuestExit(f"the guest exited with code {e.code} during {self.phase}", exit_code=e.code) from None
        if isinstance(e, Trap):
            code = e.trap_code
            if code is TrapCode.INTERRUPT:
                raise Timeout(f"{self.phase} ran past its time limit") from None
            if code is TrapCode.OUT_OF_FUEL:
                raise FuelExhausted(f"{self.phase} used up its fuel budget") from None
            kind = code.name.lower() if code else "unknown"
            raise GuestTrap(f"the guest trapped during {self.phase}: {kind}", trap=kind) from None
        if isinstance(e, WasmtimeError):
            first = _cause(str(e))
            raise GuestTrap(f"the guest failed during {self.phase}: {first}", trap="error") from None
        return False


def _cause(text: str) -> str:
    """What a wasmtime error says went wrong: the innermost "Caused by" line (a host call's complaint,
    e.g. wasmtime's WASI refusing a bad pointer), else its first line."""
    head, _, causes = text.strip().partition("Caused by:")
    lines = [ln.strip() for ln in (causes or head).strip().splitlines() if ln.strip()]
    if not lines:
        return "error"
    last = lines[-1] if causes else lines[0]
    return last.split(": ", 1)[1] if last[:1].isdigit() and ": " in last else last
