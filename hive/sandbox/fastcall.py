"""Guest calls through wasmtime-py's lower-level bindings: the one module that touches them.

`Func.__call__` costs about 20 µs plus about 15 µs per argument: every call looks the function type
up, converts each value through `Val`, builds fresh ctypes arrays and enters a context manager.
The hot path here calls the C API's `wasmtime_func_call` directly, with the argument and result arrays
preallocated once per export and written through a flat integer view; memory base and size, the epoch
deadline, fuel and the epoch increment go through private ctypes prototypes of the same C functions
(taken with `dll[name]` or a prototype of their own, so wasmtime-py's stay untouched); those return
at once and keep the GIL, only the guest call gives it up.

Failures are reported exactly like the public API: the trap or error object is built with
`Trap._from_ptr` / `WasmtimeError._from_ptr` (so ExitTrap and trap codes are the same), and a Python
exception raised by a host function is re-raised in its place.

Host-function exceptions and threads. wasmtime-py passes an exception raised inside a host function
to the caller of the guest through one module global, `wasmtime._func.LAST_EXCEPTION`: the
trampoline stores it, and `enter_wasm` re-raises it when the call comes back with a trap. With guest
calls on more than one thread (hive.invoke runs long-running functions in a thread), a trap on one
thread could consume the exception raised on another. `install()` therefore replaces the trampoline
(in `wasmtime._func` and `wasmtime._linker`, for every host function defined after it: the worker
calls it at startup, after fork and before any Linker exists) with a copy that keeps the exception in
a thread-local slot, and `maybe_raise_last_exn` with one that reads that slot first (and the global
after it, for host functions defined through the original trampoline). A host function runs on the
thread that called into the guest, so each thread gets back exactly its own exception. Single-threaded
behaviour is unchanged; tests/perf_correctness/test_fastcall.py checks both.

Pinned to wasmtime-py 50 (pyproject: wasmtime>=50,<51): the C functions and private names used by
the call path are checked at import, and a mismatch fails loudly rather than calling into the wrong
ABI. `install()` checks the version and the names it replaces again, and on anything else leaves
wasmtime-py's own trampoline in place with a warning (host-function exceptions then take the public
path: one process-wide slot, correct while guests run on one thread).
"""

from __future__ import annotations

import ctypes
import importlib.metadata
import logging
import threading
from ctypes import POINTER, byref, c_int32, c_int64, c_size_t, c_uint64, c_void_p, cast
from typing import Any

import wasmtime
from wasmtime import Func, Memory, Store, Trap, WasmtimeError
from wasmtime import _extern as _wextern
from wasmtime import _ffi as ffi
from wasmtime import _func as _wfunc
from wasmtime import _linker as _wlinker

WASMTIME_VERSION = importlib.metadata.version("wasmtime")
TESTED_MAJOR = "50"  # the trampoline copy below is of wasmtime-py 50.0.1's
if WASMTIME_VERSION.split(".")[0] != TESTED_MAJOR:  # pragma: no cover - guarded by the pin in pyproject.toml
    raise ImportError(f"hive.sandbox.fastcall is written against wasmtime-py 50.x, not {WASMTIME_VERSION}")
log = logging.getLogger("hive.sandbox")


def _proto(name: str, restype: Any, argtypes: list[Any]) -> Any:
    fn = ffi.dll[name]  # a new function object each time: wasmtime-py's prototypes are not changed
    fn.restype = restype
    fn.argtypes = argtypes
    return fn


def _held(name: str, restype: Any, argtypes: list[Any]) -> Any:
    """A C function that returns at once, called without giving up the GIL. Each release hands the GIL
    to a waiting thread (a guest thread, the epoch ticker), and getting it back costs futex calls and
    context switches: about a third of a worker's GIL traffic under load."""
    return ctypes.PYFUNCTYPE(restype, *argtypes)((name, ffi.dll))


# Pointers travel as plain integers (c_void_p), which ctypes converts cheaply.
_func_call = _proto(
    "wasmtime_func_call", c_void_p, [c_void_p, c_void_p, c_void_p, c_size_t, c_void_p, c_size_t, c_void_p]
)
# The guest call gives the GIL up (a guest may run for its whole time limit, and the epoch ticker
# needs the GIL to end it); these return at once.
_memory_data = _held("wasmtime_memory_data", c_void_p, [c_void_p, c_void_p])
_memory_data_size = _held("wasmtime_memory_data_size", c_size_t, [c_void_p, c_void_p])
_set_epoch_deadline = _held("wasmtime_context_set_epoch_deadline", None, [c_void_p, c_uint64])
_set_fuel = _held("wasmtime_context_set_fuel", c_void_p, [c_void_p, c_uint64])
_get_fuel = _held("wasmtime_context_get_fuel", c_void_p, [c_void_p, c_void_p])
_increment_epoch = _held("wasmtime_engine_increment_epoch", None, [c_void_p])


# Asked each time a store's epoch deadline is reached (on the guest's thread; ctypes takes the GIL).
_DEADLINE_CALLBACK = ctypes.CFUNCTYPE(c_size_t, c_void_p, c_void_p, POINTER(c_uint64), POINTER(ctypes.c_uint8))
_store_epoch_deadline_callback = _proto(
    "wasmtime_store_epoch_deadline_callback", None, [c_void_p, _DEADLINE_CALLBACK, c_void_p, c_void_p]
)
_error_new = _proto("wasmtime_error_new", c_void_p, [ctypes.c_char_p])
_UPDATE_DEADLINE_CONTINUE = 0
DEADLINE_ERROR = "hive: the epoch deadline ended the call"


def on_epoch_deadline(store: Store, extend: Any) -> Any:
    """From now on, when the store's epoch deadline is reached, `extend()` says how many more ticks the
    guest runs, or None to end the call (it fails with a WasmtimeError saying DEADLINE_ERROR; the caller
    knows why). Without this the deadline traps at once. Keep what this returns as long as the store."""

    def reached(_ctx: int, _env: int, delta: Any, kind: Any) -> int:
        try:
            ticks = extend()
        except BaseException:  # never into wasmtime: end the call
            log.exception("the epoch deadline callback failed")
            ticks = None
        if ticks is None:
            return _error_new(DEADLINE_ERROR.encode()) or 0
        delta[0] = ticks
        kind[0] = _UPDATE_DEADLINE_CONTINUE
        return 0

    callback = _DEADLINE_CALLBACK(reached)
    _store_epoch_deadline_callback(cast(store.ptr(), c_void_p).value, callback, None, None)
    return callback


def epoch_incrementer(engine: wasmtime.Engine) -> Any:
    """engine.increment_epoch without giving up the GIL (keep the engine alive as long as this)."""
    address = cast(engine.ptr(), c_void_p).value

    def increment() -> None:
        _increment_epoch(address)

    return increment


_VAL_SIZE = ctypes.sizeof(ffi.wasmtime_val_t)
_VAL_OF = ffi.wasmtime_val_t.of.offset
_KIND = {"i32": ffi.WASMTIME_I32, "i64": ffi.WASMTIME_I64}  # c_uint8, the type of wasmtime_val_t.kind
_VIEW = {"i32": c_int32, "i64": c_int64}
_TRAP_P = POINTER(ffi.wasm_trap_t)
_ERROR_P = POINTER(ffi.wasmtime_error_t)


# --- host-function exceptions, per thread ---

_tls = threading.local()
_original_maybe_raise_last_exn = _wfunc.maybe_raise_last_exn


_I32, _I64 = ffi.WASMTIME_I32.value, ffi.WASMTIME_I64.value
# Result kind of each host function's result-type list (held here, so its id stays unique).
_result_kinds: dict[int, tuple[Any, int | None]] = {}


def _result_kind(result_tys: Any) -> int | None:
    entry = _result_kinds.get(id(result_tys))
    if entry is None or entry[0] is not result_tys:
        kind = None
        if len(result_tys) == 1:
            ty = result_tys[0]
            kind = _I32 if ty == wasmtime.ValType.i32() else _I64 if ty == wasmtime.ValType.i64() else None
        entry = _result_kinds[id(result_tys)] = (result_tys, kind)
    return entry[1]


_names: dict[str, tuple[Any, int]] = {}
_EXTERN_MEMORY = ffi.WASMTIME_EXTERN_MEMORY.value


class _Caller(_wfunc.Caller):
    """wasmtime.Caller with a cheaper get(): the export name's C buffer is made once, and a memory
    (what host functions look up) is wrapped without the generic lookup. Same results."""

    def get(self, name: str) -> Any:
        entry = _names.get(name)
        if entry is None:
            raw = name.encode("utf-8")
            entry = (ctypes.create_string_buffer(raw), len(raw))
            if len(_names) < 64:
                _names[name] = entry
        ptr = self._Caller__ptr  # type: ignore[attr-defined]
        if ptr is None:
            return None
        item = ffi.wasmtime_extern_t()
        if not ffi.wasmtime_caller_export_get(ptr, entry[0], entry[1], byref(item)):
            return None
        if item.kind == _EXTERN_MEMORY:
            return Memory._from_raw(item.of.memory)
        return _wextern.wrap_extern(item)


@ffi.wasmtime_func_callback_t
def _trampoline(idx, caller, params, nparams, results, nresults):
    # wasmtime._func.trampoline (wasmtime-py 50.0.1) with three changes: an exception is kept for the
    # thread that called the guest (not in a process-wide global), i32/i64 values skip the generic
    # Val conversions (same values: ctypes wraps integers the same way Val.i32/i64 do), and the
    # Caller's get() is cheaper.
    caller = _Caller(caller)
    try:
        func, result_tys, access_caller = _wfunc.FUNCTIONS.get(idx or 0)
        pyparams = [caller] if access_caller else []
        for i in range(0, nparams):
            raw = params[i]
            kind = raw.kind
            if kind == _I32:
                pyparams.append(raw.of.i32)
            elif kind == _I64:
                pyparams.append(raw.of.i64)
            else:
                pyparams.append(wasmtime.Val._from_raw(caller, raw, owned=False).value)
        pyresults = func(*pyparams)
        if nresults == 0:
            if pyresults is not None:
                raise WasmtimeError("callback produced results when it shouldn't")
        elif nresults == 1:
            kind = _result_kind(result_tys)
            if kind is not None and isinstance(pyresults, int):
                out = results[0]
                out.kind = kind
                if kind == _I32:
                    out.of.i32 = pyresults
                else:
                    out.of.i64 = pyresults
            else:
                results[0] = wasmtime.Val._convert_to_raw(caller, result_tys[0], pyresults)
        else:
            if len(pyresults) != nresults:
                raise WasmtimeError("callback produced wrong number of results")
            for i, result in enumerate(pyresults):
                results[i] = wasmtime.Val._convert_to_raw(caller, result_tys[i], result)
        return 0
    except BaseException as e:
        _tls.exc = e  # this thread's, not a process-wide global
        trap = Trap("python exception")._consume()
        return cast(trap, c_void_p).value
    finally:
        caller._invalidate()


def maybe_raise_last_exn() -> None:
    """Re-raise the exception a host function raised on this thread, if any."""
    exc = getattr(_tls, "exc", None)
    if exc is not None:
        _tls.exc = None
        raise exc
    _original_maybe_raise_last_exn()


# Set on wasmtime._func by install(): a module attribute of our own, so a second import sees it.
_INSTALLED_MARK = "_hive_thread_local_exceptions"


def installed() -> bool:
    return getattr(_wfunc, _INSTALLED_MARK, False) is True


def install() -> bool:
    """Replace wasmtime-py's host-function trampoline and maybe_raise_last_exn with the copies above,
    for the host functions defined from now on (call it before any Linker exists). Only on the
    wasmtime-py tested here; otherwise wasmtime-py's own stay, with a warning. Whether installed."""
    if installed():
        return True
    problem = None
    if WASMTIME_VERSION.split(".")[0] != TESTED_MAJOR:  # pragma: no cover - refused at import today
        problem = f"wasmtime-py {WASMTIME_VERSION} is not the tested {TESTED_MAJOR}.x"
    for name in ("trampoline", "maybe_raise_last_exn", "FUNCTIONS", "Caller", "enter_wasm"):
        if problem is None and not hasattr(_wfunc, name):  # pragma: no cover - guarded by the pin
            problem = f"wasmtime._func.{name} is missing"
    if problem is None and getattr(_wlinker, "trampoline", None) is not _wfunc.trampoline:  # pragma: no cover
        problem = "wasmtime._linker.trampoline is not wasmtime._func.trampoline"
    if problem is not None:  # pragma: no cover
        log.warning(
            "host-function exceptions stay on wasmtime-py's process-wide path (%s): guest calls on "
            "several threads could see each other's exceptions",
            problem,
        )
        return False
    _wfunc.trampoline = _trampoline
    _wlinker.trampoline = _trampoline
    _wfunc.maybe_raise_last_exn = maybe_raise_last_exn
    setattr(_wfunc, _INSTALLED_MARK, True)
    return True


# --- the call path ---


def _raise_failure(err: int | None, trap_slot: c_void_p) -> None:
    """What Func.__call__ raises for the same outcome: an error first, else the trap, either
    replaced by the Python exception a host function raised on this thread."""
    trap_addr = trap_slot.value
    trap_slot.value = None
    if err:
        if trap_addr:  # pragma: no cover - the C API sets one or the other
            Trap._from_ptr(cast(trap_addr, _TRAP_P))
        error = WasmtimeError._from_ptr(cast(err, _ERROR_P))
        maybe_raise_last_exn()
        raise error
    if trap_addr is None:  # pragma: no cover - the callers come here only on an error or a trap
        raise WasmtimeError("wasmtime_func_call failed without an error or a trap")
    trap = Trap._from_ptr(cast(trap_addr, _TRAP_P))
    maybe_raise_last_exn()
    raise trap


class FastStore:
    """Per-call knobs of one Store, without going through Store's methods."""

    __slots__ = ("store", "ctx", "_fuel")

    def __init__(self, store: Store) -> None:
        self.store = store  # keeps the context pointer valid
        self.ctx: int = cast(store._context(), c_void_p).value  # type: ignore[assignment]
        self._fuel = c_uint64(0)

    def set_epoch_deadline(self, ticks_after_current: int) -> None:
        _set_epoch_deadline(self.ctx, ticks_after_current)

    def set_fuel(self, fuel: int) -> None:
        err = _set_fuel(self.ctx, fuel)
        if err:
            raise WasmtimeError._from_ptr(cast(err, _ERROR_P))

    def get_fuel(self) -> int:
        err = _get_fuel(self.ctx, ctypes.addressof(self._fuel))
        if err:
            raise WasmtimeError._from_ptr(cast(err, _ERROR_P))
        return self._fuel.value


class FastMemory:
    """Base address and size of one exported memory (re-read them after any guest call: memory.grow
    may move the mapping)."""

    __slots__ = ("memory", "_ctx", "_ref")

    def __init__(self, fstore: FastStore, memory: Memory) -> None:
        self.memory = memory
        self._ctx = fstore.ctx
        self._ref = ctypes.addressof(memory._memory)

    def base(self) -> int:
        return _memory_data(self._ctx, self._ref) or 0

    def size(self) -> int:
        return _memory_data_size(self._ctx, self._ref)


class FastFunc:
    """One export with integer parameters and at most one integer result, called through
    wasmtime_func_call (checked: the C API still verifies the types and the store)."""

    __slots__ = (
        "func",
        "_ctx",
        "_ref",
        "_vals",
        "_args",
        "_idx",
        "_res",
        "_ridx",
        "_nparams",
        "_nresults",
        "_params_ptr",
        "_results_ptr",
        "_trap",
        "_trap_ptr",
    )

    def __init__(self, fstore: FastStore, func: Func, params: list[str], results: list[str]) -> None:
        if any(p not in _KIND for p in params) or len(results) > 1 or any(r not in _KIND for r in results):
            raise TypeError(f"FastFunc handles i32/i64 parameters and at most one result, not {params} -> {results}")
        self.func = func  # keeps the wasmtime_func_t alive
        self._ctx = fstore.ctx
        self._ref = ctypes.addressof(func._func)
        n = len(params) + len(results)
        vals = (ffi.wasmtime_val_t * max(1, n))()
        for i, p in enumerate(params):
            vals[i].kind = _KIND[p]
        self._vals = vals
        # Parameters are written through an int64 view (the low bytes are the i32 for i32 params);
        # the result is read through a view of its own width.
        self._args = (c_int64 * (ctypes.sizeof(vals) // 8)).from_buffer(vals)
        self._idx = tuple((i * _VAL_SIZE + _VAL_OF) // 8 for i in range(len(params)))
        self._nparams = len(params)
        self._nresults = len(results)
        base = ctypes.addressof(vals)
        self._params_ptr = base
        self._results_ptr = base + len(params) * _VAL_SIZE
        # Without a result the view exists too (never read: _nresults says so), so _res is never None.
        view = _VIEW[results[0]] if results else c_int64
        # Array[Any]: an element of a c_int32/c_int64 array reads as a Python int.
        self._res: ctypes.Array[Any] = (view * (ctypes.sizeof(vals) // ctypes.sizeof(view))).from_buffer(vals)
        self._ridx = (len(params) * _VAL_SIZE + _VAL_OF) // ctypes.sizeof(view) if results else 0
        self._trap = c_void_p()
        self._trap_ptr = ctypes.addressof(self._trap)

    def __call__(self, *args: int) -> int | None:
        if len(args) != self._nparams:
            raise WasmtimeError(f"expected {self._nparams} arguments, given {len(args)}")
        a = self._args
        for i, v in zip(self._idx, args, strict=True):
            a[i] = v
        err = _func_call(
            self._ctx, self._ref, self._params_ptr, self._nparams, self._results_ptr, self._nresults, self._trap_ptr
        )
        if err or self._trap.value:
            _raise_failure(err, self._trap)
        return self._res[self._ridx] if self._nresults else None

    def call1(self, x: int) -> int:
        """One parameter, one result: the allocator."""
        self._args[self._idx[0]] = x
        err = _func_call(self._ctx, self._ref, self._params_ptr, 1, self._results_ptr, 1, self._trap_ptr)
        if err or self._trap.value:
            _raise_failure(err, self._trap)
        return self._res[self._ridx]

    def call2(self, x: int, y: int) -> int:
        """Two parameters, one result: the handler."""
        a = self._args
        i, j = self._idx
        a[i] = x
        a[j] = y
        err = _func_call(self._ctx, self._ref, self._params_ptr, 2, self._results_ptr, 1, self._trap_ptr)
        if err or self._trap.value:
            _raise_failure(err, self._trap)
        return self._res[self._ridx]
