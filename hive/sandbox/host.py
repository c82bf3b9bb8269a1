"""Host functions a guest may import: `hive.*` and a sandboxed subset of wasi_snapshot_preview1.

The WASI subset is written here rather than taken from wasmtime's WASI so that each capability can be
granted per function, stdout/stderr become log lines tagged with the function, env holds only the
function's config, and there are no preopened dirs. Clocks and random are wasmtime's own (NATIVE_WASI):
a Python host call costs microseconds and hello makes one per request. That makes every Store need
`set_wasi()` (without it the first WASI call aborts the process), so Stores come from new_store().
Host functions find the calling guest's context through a thread-local set around every guest call.
"""

from __future__ import annotations

import ctypes
import logging
import struct
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any

from wasmtime import Caller, Engine, FuncType, Linker, Memory, Store, ValType, WasiConfig

from hive import hostio
from hive.errors import AbiViolation, GuestExit, WallTimeout
from hive.sandbox import fastcall

log = logging.getLogger("hive.guest")

WASI = "wasi_snapshot_preview1"
HIVE = "hive"

ESUCCESS, EBADF, EFAULT, EINVAL, ESPIPE = 0, 8, 21, 28, 70
LOG_LEVELS = (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR)
MAX_LOG_BYTES_PER_CALL = 64 * 1024
# Lines are capped too: empty lines cost no bytes, yet each one is a server log record.
MAX_LOG_LINES_PER_CALL = 1024
MAX_LINE = 8 * 1024


@dataclass
class GuestContext:
    """Per-store facts the host functions need."""

    function: str
    version: int = 0
    env: list[bytes] = field(default_factory=list)  # b"KEY=VALUE"
    request_id: str = ""
    logged: int = 0  # bytes logged in the current call
    lines: int = 0  # lines logged in the current call
    dropped: int = 0
    dropped_lines: int = 0
    partial: dict[int, bytes] = field(default_factory=dict)
    # Also receives each line: (function, version, stream, level, text, request_id).
    sink: Callable[[str, int, str, int, str, str], None] | None = None
    # The memory of the instance being called (a hive.sandbox.fastcall.FastMemory), set by
    # GuestInstance before each call; None during instantiation.
    memory: Any = None
    # The invocation's I/O capabilities (a GuestIO, prepared per call by the layer above), or None:
    # then every fetch and KV call gives the guest an error result.
    io: Any = None
    # Host-call results by handle: bytes, or a concurrent.futures.Future of bytes still pending.
    slots: dict[int, Any] = field(default_factory=dict)
    next_handle: int = 1
    # Set by GuestInstance: wrap a blocking wait so that it does not count as guest execution time.
    waiting: Any = None

    def emit(self, level: int, text: bytes, stream: str) -> None:
        if self.logged >= MAX_LOG_BYTES_PER_CALL or self.lines >= MAX_LOG_LINES_PER_CALL:
            self.dropped += len(text)
            self.dropped_lines += 1
            return
        self.logged += len(text)
        self.lines += 1
        line = text[:MAX_LINE].decode("utf-8", "replace")
        log.log(
            level,
            "[%s v%d %s %s] %s",
            self.function,
            self.version,
            stream,
            self.request_id or "-",
            line,
            extra={"function": self.function, "version": self.version, "stream": stream, "request_id": self.request_id},
        )
        if self.sink is not None:
            self.sink(self.function, self.version, stream, level, line, self.request_id)

    def begin_call(self, request_id: str = "") -> None:
        self.request_id = request_id
        self.logged = self.lines = self.dropped = self.dropped_lines = 0

    def end_call(self) -> None:
        if self.slots:
            for value in self.slots.values():  # pending fetches of an invocation that is over
                if isinstance(value, Future):
                    value.cancel()
            self.slots.clear()
        self.next_handle = 1
        for fd, rest in list(self.partial.items()):
            if rest:
                self.emit(LOG_LEVELS[1 if fd == 1 else 3], rest, "stdout" if fd == 1 else "stderr")
        self.partial.clear()
        if self.dropped_lines:
            log.warning(
                "dropped %d lines (%d bytes) of guest output over the per-call limit",
                self.dropped_lines,
                self.dropped,
                extra={
                    "function": self.function,
                    "version": self.version,
                    "stream": "host",
                    "request_id": self.request_id,
                },
            )
            self.dropped = self.dropped_lines = 0


_local = threading.local()


def set_current(ctx: GuestContext | None) -> None:
    _local.ctx = ctx


def current() -> GuestContext:
    return _local.ctx


class _Mem:
    """Bounds-checked view of the caller's linear memory for one host call."""

    __slots__ = ("base", "size")

    def __init__(self, caller: Caller) -> None:
        ctx = getattr(_local, "ctx", None)
        fast = ctx.memory if ctx is not None else None
        if fast is not None:  # the calling instance's memory (hive.sandbox.guest), without an export lookup
            self.base = fast.base()
            self.size = fast.size()
            return
        mem = caller.get("memory")
        if not isinstance(mem, Memory):
            raise _Fault()
        self.base = ctypes.addressof(mem.data_ptr(caller).contents)
        self.size = mem.data_len(caller)

    def check(self, ptr: int, n: int) -> int:
        if ptr < 0 or n < 0 or ptr + n > self.size:
            raise _Fault()
        return self.base + ptr

    def read(self, ptr: int, n: int) -> bytes:
        return ctypes.string_at(self.check(ptr, n), n)

    def write(self, ptr: int, data: bytes) -> None:
        ctypes.memmove(self.check(ptr, len(data)), data, len(data))

    def u32(self, ptr: int) -> int:
        return struct.unpack("<I", self.read(ptr, 4))[0]


class _Fault(Exception):
    pass


def _errno(fn: Callable[..., int | None]) -> Callable[..., int]:
    def wrapper(caller: Caller, *args: int) -> int:
        try:
            return fn(_Mem(caller), *args) or ESUCCESS
        except _Fault:
            return EFAULT

    wrapper.__name__ = fn.__name__
    return wrapper


# --- hive.* ---


def hive_log(caller: Caller, level: int, ptr: int, n: int) -> None:
    try:
        text = _Mem(caller).read(ptr, min(n, MAX_LINE))
    except _Fault:
        return
    current().emit(LOG_LEVELS[min(max(level, 0), 3)], text, "log")


# --- hive.fetch_*, hive.wait, hive.kv, hive.result_read: I/O through the invocation's capabilities ---

MAX_UNREAD_RESULTS = 64
MAX_RECORD_BYTES = 16 << 20  # a request record: the body limits apply above this too
# A function granted no I/O runs without an io (so does start-up code): its calls are refused as values.
_NO_FETCH = (
    'this function may not fetch: grant hosts with "allowed_hosts" in its deploy manifest or '
    "allowed_hosts in hive.toml [permissions] (start-up code can never fetch)"
)
_NO_KV = (
    'this function was granted no KV store: add it to "kv" in its deploy manifest or kv in hive.toml '
    "[permissions] (start-up code can never use KV)"
)


def _record(caller: Caller, ptr: int, n: int) -> bytes:
    if n > MAX_RECORD_BYTES:
        raise AbiViolation(f"a host-call record of {n} bytes (at most {MAX_RECORD_BYTES})")
    try:
        return _Mem(caller).read(ptr, n)
    except _Fault:
        raise AbiViolation(f"a host-call record at {ptr}+{n} lies outside guest memory") from None


def _keep(ctx: GuestContext, value: Any) -> int:
    h = ctx.next_handle
    ctx.next_handle += 1
    ctx.slots[h] = value
    return h


def _packed(h: int, result: bytes) -> int:
    return (h << 32) | len(result)


def fetch_send(caller: Caller, ptr: int, n: int) -> int:
    ctx = current()
    if len(ctx.slots) >= MAX_UNREAD_RESULTS:
        return -1
    record = _record(caller, ptr, n)
    io = ctx.io
    return _keep(ctx, io.fetch_start(record) if io is not None else hostio.error("host_not_allowed", _NO_FETCH))


def fetch_wait(caller: Caller, handle: int) -> int:
    ctx = current()
    slots = ctx.slots
    if handle == 0:  # the first of the pending ones to finish
        pending = {v: h for h, v in slots.items() if isinstance(v, Future)}
        if not pending:
            return -1
        done = [h for f, h in pending.items() if f.done()]
        if not done:
            with ctx.waiting(ctx.io):
                finished, _ = wait_futures(pending, timeout=ctx.io.remaining(), return_when=FIRST_COMPLETED)
            if not finished:
                raise WallTimeout(ctx.io.timeout_message())
            done = [pending[f] for f in finished]
        handle = min(done)
    value = slots.get(handle)
    if value is None:
        return -1
    if isinstance(value, Future):
        if not value.done():
            with ctx.waiting(ctx.io):
                wait_futures([value], timeout=ctx.io.remaining())
            if not value.done():
                raise WallTimeout(ctx.io.timeout_message())
        value = slots[handle] = value.result()
    return _packed(handle, value)


# hive.wait's answers besides a packed result (docs/abi.md, "hive.wait").
WAIT_TIMED_OUT, WAIT_UNKNOWN, WAIT_CANNOT = 0, -1, -2
_SLEPT_PAST_WALL = (
    "the invocation ran past its wall-clock limit (limits.wall_timeout_ms) while it waited for a timer; "
    "shorten the timer or raise limits.wall_timeout_ms"
)


def wait(caller: Caller, handle: int, timeout_ms: int) -> int:
    """fetch_wait with a time-out: a guest's timers sleep here, off its execution clock, instead of
    polling the clock. Waiting needs the invocation's I/O capabilities (its wall-clock deadline, a guest
    thread): without them the guest is told so at once and must do without."""
    ctx = current()
    slots = ctx.slots
    if handle == 0:  # any result that is ready, else the first in-flight one to finish, else a sleep
        ready = [h for h, v in slots.items() if not isinstance(v, Future) or v.done()]
        if ready:
            return _settled(ctx, min(ready))
        targets = [v for v in slots.values() if isinstance(v, Future)]
        if not targets and timeout_ms < 0:
            return WAIT_UNKNOWN  # nothing to wait for, and no end to the wait
    else:
        value = slots.get(handle)
        if value is None:
            return WAIT_UNKNOWN
        if not isinstance(value, Future) or value.done():
            return _settled(ctx, handle)
        targets = [value]
    io = ctx.io
    if io is None or ctx.waiting is None:
        return WAIT_CANNOT
    left = io.remaining()
    by_wall = timeout_ms < 0 or timeout_ms / 1000 >= left  # the wall clock ends this wait, not the time-out
    limit = left if by_wall else timeout_ms / 1000
    with ctx.waiting(io):
        if targets:
            finished, _ = wait_futures(targets, timeout=limit, return_when=FIRST_COMPLETED)
        else:
            finished = set()
            time.sleep(limit)
    if finished:
        done = [h for h, v in slots.items() if isinstance(v, Future) and v.done()]
        return _settled(ctx, handle or min(done))
    if by_wall:
        raise WallTimeout(io.timeout_message() if targets else _SLEPT_PAST_WALL)
    return WAIT_TIMED_OUT


def _settled(ctx: GuestContext, handle: int) -> int:
    """The packed answer for a result that is ready, kept as bytes for result_read."""
    value = ctx.slots[handle]
    if isinstance(value, Future):
        value = ctx.slots[handle] = value.result()
    return _packed(handle, value)


def kv(caller: Caller, ptr: int, n: int) -> int:
    ctx = current()
    if len(ctx.slots) >= MAX_UNREAD_RESULTS:
        return -1
    record = _record(caller, ptr, n)
    io = ctx.io
    result = io.kv(record) if io is not None else hostio.error("store_not_granted", _NO_KV)
    return _packed(_keep(ctx, result), result)


def result_read(caller: Caller, handle: int, ptr: int, n: int) -> int:
    ctx = current()
    value = ctx.slots.get(handle)
    if value is None or isinstance(value, Future):
        return -1
    data = value[: max(n, 0)]
    try:
        _Mem(caller).write(ptr, data)
    except _Fault:
        raise AbiViolation(f"result_read into {ptr}+{len(data)}, outside guest memory") from None
    del ctx.slots[handle]
    return len(data)


# --- WASI ---


@_errno
def fd_write(mem: _Mem, fd: int, iovs: int, iovs_len: int, nwritten: int) -> int | None:
    if fd not in (1, 2):
        return EBADF
    if iovs_len > 1024:
        return EINVAL
    chunks = []
    for i in range(iovs_len):
        buf, n = struct.unpack("<II", mem.read(iovs + 8 * i, 8))
        chunks.append(mem.read(buf, n))
    data = b"".join(chunks)
    ctx = current()
    pending = ctx.partial.get(fd, b"") + data
    *lines, rest = pending.split(b"\n")
    for line in lines:
        ctx.emit(LOG_LEVELS[1 if fd == 1 else 3], line, "stdout" if fd == 1 else "stderr")
    ctx.partial[fd] = rest[-MAX_LINE:]
    mem.write(nwritten, struct.pack("<I", len(data)))
    return None


@_errno
def fd_read(mem: _Mem, fd: int, iovs: int, iovs_len: int, nread: int) -> int | None:
    if fd != 0:
        return EBADF
    mem.write(nread, b"\0\0\0\0")  # stdin is empty
    return None


@_errno
def fd_close(mem: _Mem, fd: int) -> int:
    return EBADF


@_errno
def fd_seek(mem: _Mem, fd: int, offset: int, whence: int, newoffset: int) -> int:
    return ESPIPE if fd in (0, 1, 2) else EBADF


@_errno
def fd_fdstat_get(mem: _Mem, fd: int, buf: int) -> int | None:
    if fd not in (0, 1, 2):
        return EBADF
    rights = (1 << 1) if fd == 0 else (1 << 6)  # fd_read / fd_write
    mem.write(buf, struct.pack("<BxHxxxxQQ", 2, 0, rights, 0))  # character device
    return None


@_errno
def fd_prestat_get(mem: _Mem, fd: int, buf: int) -> int:
    return EBADF  # no preopened directories


@_errno
def fd_prestat_dir_name(mem: _Mem, fd: int, path: int, n: int) -> int:
    return EBADF


def _sizes(mem: _Mem, items: list[bytes], count_ptr: int, size_ptr: int) -> None:
    mem.write(count_ptr, struct.pack("<I", len(items)))
    mem.write(size_ptr, struct.pack("<I", sum(len(i) + 1 for i in items)))


def _fill(mem: _Mem, items: list[bytes], ptrs: int, buf: int) -> None:
    for i, item in enumerate(items):
        mem.write(ptrs + 4 * i, struct.pack("<I", buf))
        mem.write(buf, item + b"\0")
        buf += len(item) + 1


@_errno
def environ_sizes_get(mem: _Mem, count_ptr: int, size_ptr: int) -> None:
    _sizes(mem, current().env, count_ptr, size_ptr)


@_errno
def environ_get(mem: _Mem, ptrs: int, buf: int) -> None:
    _fill(mem, current().env, ptrs, buf)


@_errno
def args_sizes_get(mem: _Mem, count_ptr: int, size_ptr: int) -> None:
    _sizes(mem, [], count_ptr, size_ptr)


@_errno
def args_get(mem: _Mem, ptrs: int, buf: int) -> None:
    return None


def proc_exit(caller: Caller, code: int) -> None:
    raise GuestExit(f"the guest called proc_exit({code})", exit_code=code)


def sched_yield(caller: Caller) -> int:
    return ESUCCESS


# (params, results) per import, in wasm type letters: i = i32, I = i64. FuncTypes are built per
# linker, because wasmtime ties a FuncType to the engine that first uses it.
Signature = tuple[str, str]
_KINDS = {"i": "i32", "I": "i64"}

# None: wasmtime's own WASI function (NATIVE_WASI), linked by define_all.
HOST_FUNCTIONS: dict[tuple[str, str], tuple[Signature, Callable[..., object] | None]] = {
    (HIVE, "log"): (("iii", ""), hive_log),
    (HIVE, "fetch_send"): (("ii", "i"), fetch_send),
    (HIVE, "fetch_wait"): (("i", "I"), fetch_wait),
    (HIVE, "wait"): (("ii", "I"), wait),  # ABI v1 revision 3
    (HIVE, "kv"): (("ii", "I"), kv),
    (HIVE, "result_read"): (("iii", "i"), result_read),
    (WASI, "fd_write"): (("iiii", "i"), fd_write),
    (WASI, "fd_read"): (("iiii", "i"), fd_read),
    (WASI, "fd_close"): (("i", "i"), fd_close),
    (WASI, "fd_seek"): (("iIii", "i"), fd_seek),
    (WASI, "fd_fdstat_get"): (("ii", "i"), fd_fdstat_get),
    (WASI, "fd_prestat_get"): (("ii", "i"), fd_prestat_get),
    (WASI, "fd_prestat_dir_name"): (("iii", "i"), fd_prestat_dir_name),
    (WASI, "clock_time_get"): (("iIi", "i"), None),
    (WASI, "clock_res_get"): (("ii", "i"), None),
    (WASI, "random_get"): (("ii", "i"), None),
    (WASI, "environ_sizes_get"): (("ii", "i"), environ_sizes_get),
    (WASI, "environ_get"): (("ii", "i"), environ_get),
    (WASI, "args_sizes_get"): (("ii", "i"), args_sizes_get),
    (WASI, "args_get"): (("ii", "i"), args_get),
    (WASI, "proc_exit"): (("i", ""), proc_exit),
    (WASI, "sched_yield"): (("", "i"), sched_yield),
}


def signature_names(sig: Signature) -> tuple[list[str], list[str]]:
    return [_KINDS[c] for c in sig[0]], [_KINDS[c] for c in sig[1]]


NATIVE_WASI = frozenset(name for (module, name), (_, fn) in HOST_FUNCTIONS.items() if fn is None)


def define_all(linker: Linker) -> None:
    """wasmtime's WASI (for NATIVE_WASI), shadowed by the host functions above. A module can import
    only what HOST_FUNCTIONS lists (hive.sandbox.inspect), so the rest of wasmtime's WASI stays unused;
    it has no preopened dirs or sockets to reach anyway."""
    # A host function defined before fastcall's trampoline patch crashes the process when called
    # (measured): installing here keeps the order whoever makes the linker.
    fastcall.install()
    linker.allow_shadowing = True
    linker.define_wasi()
    vt = {"i": ValType.i32(), "I": ValType.i64()}
    for (module, name), ((params, results), fn) in HOST_FUNCTIONS.items():
        if fn is not None:
            ty = FuncType([vt[c] for c in params], [vt[c] for c in results])
            linker.define_func(module, name, ty, fn, access_caller=True)


def new_store(engine: Engine) -> Store:
    """A Store for a linker made by define_all: with an empty WASI context (no args, env, dirs or
    stdio: the host functions above serve those)."""
    store = Store(engine)
    store.set_wasi(WasiConfig())
    return store
