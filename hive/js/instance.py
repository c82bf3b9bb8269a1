"""A JavaScript function's instances: the shared engine module with the function's bundle loaded.

The engine is compiled once (Sandbox.compile / Sandbox.load and its .cwasm cache). A function is a
`JsFunction`: that CompiledModule plus the bundle bytes, whose `compiled` view makes a plain
`GuestInstance` load the bundle right after `_initialize`, so every limit, the error mapping and the
call path are the ones core modules use, and hive/sandbox needs no change for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from wasmtime import Func, Instance, Memory, Store

from hive.errors import HiveError, InvalidModule
from hive.manifest import WASI_GROUPS
from hive.sandbox import CompiledModule, GuestContext, GuestInstance, GuestLimits, Sandbox, host
from hive.sandbox.guest import _guest_errors

from .engine import COMPILE_STRIP, ENGINE_WASI_GROUPS

# Loading a big bundle (parse + top-level code) may take longer than one request may.
DEFAULT_LOAD_TIMEOUT_MS = 5_000
ENGINE_WASI = frozenset().union(*(WASI_GROUPS[g] for g in (*ENGINE_WASI_GROUPS, "process")))

# hive_js_load's results (glue.c has the same table).
LOAD_RESULTS = {
    1: "the function's code threw while loading",
    2: "the JavaScript engine failed to start",
    3: "this instance already has a function loaded",
    4: "the function never registered a handler: call Deno.serve(handler) at the top level (or export default { fetch })",
    5: "the function ran out of memory while loading",
    6: "the function's code does not compile",
    7: "the function's top-level await never settled",
}
BYTECODE_MAGIC = b"\0hive-qjs-bc\1"


class JsLoadError(HiveError):
    """The bundle does not load: it does not compile, throws at the top level, or serves nothing."""

    code, status = "js_load_failed", 422


def load_engine(sandbox: Sandbox, wasm_path: str | Path, *, fuel: bool = False) -> CompiledModule:
    """The engine as a CompiledModule, from the sandbox's artifact cache when it has it."""
    wasm = Path(wasm_path).read_bytes()
    sha = hashlib.sha256(wasm).hexdigest()
    return sandbox.load(sha, wasm, ENGINE_WASI, fuel)


def _packed_text(store: Store, memory: Memory, packed: int) -> str:
    packed &= 0xFFFF_FFFF_FFFF_FFFF
    ptr, n = packed >> 32, packed & 0xFFFF_FFFF
    if not packed or ptr + n > memory.data_len(store):
        return ""
    return bytes(memory.read(store, ptr, ptr + n)).decode("utf-8", "replace")


def _export(exports: Any, name: str) -> Func:
    f = exports[name]
    if not isinstance(f, Func):
        raise InvalidModule(f"the JS engine does not export {name}")
    return f


def _write(store: Store, exports: Any, data: bytes) -> int:
    ptr = _export(exports, "hive_alloc")(store, max(len(data), 1)) & 0xFFFF_FFFF
    memory = exports["memory"]
    assert isinstance(memory, Memory)
    if ptr == 0 or ptr + len(data) > memory.data_len(store):
        raise JsLoadError(f"the JS engine could not take {len(data)} bytes of code: out of memory")
    memory.write(store, data, ptr)
    return ptr


def load_bundle(store: Store, exports: Any, bundle: bytes) -> None:
    """hive_js_load(bundle) in a fresh engine instance; a failure is a JsLoadError with the exception text."""
    ptr = _write(store, exports, bundle)
    rc = _export(exports, "hive_js_load")(store, ptr, len(bundle))
    _export(exports, "hive_free")(store, ptr, max(len(bundle), 1))
    if rc != 0:
        memory = exports["memory"]
        assert isinstance(memory, Memory)
        detail = _packed_text(store, memory, _export(exports, "hive_js_last_error")(store))
        what = LOAD_RESULTS.get(rc, f"hive_js_load returned {rc}")
        raise JsLoadError(f"{what}: {detail}" if detail else what, load_result=rc)


class _LoadingPre:
    """Stands in for CompiledModule.pre: instantiates the engine, runs _initialize, then loads the
    bundle, all inside GuestInstance's instantiation (so traps and time-outs map as they always do)."""

    def __init__(self, fn: JsFunction, sandbox: Sandbox) -> None:
        self.fn = fn
        self.sandbox = sandbox

    def instantiate(self, store: Store) -> Instance:
        engine = self.fn.engine
        store.set_epoch_deadline(self.sandbox.deadline_ticks(self.fn.load_timeout_ms))
        if engine.fuel:
            store.set_fuel(1 << 62)  # loading is bounded by the load time-out, not the per-call fuel
        instance = engine.pre.instantiate(store)
        exports = instance.exports(store)
        ctx = host.current()
        ctx.begin_call("")
        try:
            if engine.has_initialize:
                _export(exports, "_initialize")(store)
            load_bundle(store, exports, self.fn.bundle)
        finally:
            ctx.end_call()  # console output of top-level code becomes log lines now
        return instance


@dataclass(frozen=True)
class JsFunction:
    """One JavaScript function: the shared engine and the function's bundle (source or bytecode)."""

    engine: CompiledModule
    bundle: bytes
    load_timeout_ms: int = DEFAULT_LOAD_TIMEOUT_MS

    def compiled(self, sandbox: Sandbox) -> CompiledModule:
        """A CompiledModule for GuestInstance: the engine's module, whose instantiation loads the bundle."""
        return dataclasses.replace(self.engine, pre=cast(Any, _LoadingPre(self, sandbox)), has_initialize=False)

    def instance(self, sandbox: Sandbox, limits: GuestLimits, ctx: GuestContext) -> GuestInstance:
        return GuestInstance(sandbox, self.compiled(sandbox), limits, ctx)


def new_instance(
    sandbox: Sandbox,
    engine: CompiledModule,
    bundle: bytes,
    limits: GuestLimits,
    ctx: GuestContext,
    *,
    load_timeout_ms: int = DEFAULT_LOAD_TIMEOUT_MS,
) -> GuestInstance:
    """A warm instance of the engine with `bundle` loaded, ready for GuestInstance.call."""
    return JsFunction(engine, bundle, load_timeout_ms).instance(sandbox, limits, ctx)


def compile_bundle(
    sandbox: Sandbox,
    engine: CompiledModule,
    source: bytes,
    *,
    strip_source: bool = True,
    timeout_ms: int = DEFAULT_LOAD_TIMEOUT_MS,
) -> bytes:
    """The bundle as QuickJS bytecode for this engine: it loads without parsing (a 900 KB bundle in
    15 ms instead of 60) and, with `strip_source`, without the copy of its source text QuickJS keeps
    for every function (Function.prototype.toString then shows `[native code]`; stack traces keep
    their line numbers), which is most of a big bundle's memory. A syntax error is a JsLoadError.
    The bytecode is only valid for the engine that made it: key it by the engine's sha256."""
    store = host.new_store(engine.engine)
    store.set_limits(memory_size=256 << 20)
    store.set_epoch_deadline(sandbox.deadline_ticks(timeout_ms))
    if engine.fuel:
        store.set_fuel(1 << 62)
    try:
        previous: GuestContext | None = host.current()
    except AttributeError:  # no guest has run on this thread yet
        previous = None
    host.set_current(GuestContext("js-compile"))
    try:
        with _guest_errors("compiling the function's code"):
            instance = engine.pre.instantiate(store)
            exports = instance.exports(store)
            if engine.has_initialize:
                _export(exports, "_initialize")(store)
            ptr = _write(store, exports, source)
            packed = _export(exports, "hive_js_compile")(store, ptr, len(source), COMPILE_STRIP if strip_source else 0)
            memory = exports["memory"]
            assert isinstance(memory, Memory)
            if not packed:
                detail = _packed_text(store, memory, _export(exports, "hive_js_last_error")(store))
                raise JsLoadError(f"{LOAD_RESULTS[6]}: {detail}" if detail else LOAD_RESULTS[6], load_result=6)
            packed &= 0xFFFF_FFFF_FFFF_FFFF
            p, n = packed >> 32, packed & 0xFFFF_FFFF
            return bytes(memory.read(store, p, p + n))
    finally:
        host.set_current(previous)
