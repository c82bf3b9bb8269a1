"""The per-process wasmtime engine: configuration, epoch ticker, compile and artifact cache.

Create a Sandbox after fork, never in the gunicorn master (compiling in a child of a process that
compiled with parallel compilation can hang).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from wasmtime import Config, Engine, FuncType, InstancePre, Linker, MemoryType, Module, WasmtimeError

from hive import abi
from hive.errors import ForbiddenImport, InvalidModule
from hive.sandbox import host

log = logging.getLogger("hive.sandbox")

WASM_MAGIC = b"\0asm"
CORE_VERSION = b"\x01\x00\x00\x00"


class EpochTicker(threading.Thread):
    """Increments the engine epoch in step with the wall clock, catching up after any delay."""

    def __init__(self, engines: list[Engine], tick_s: float) -> None:
        super().__init__(name="hive-epoch", daemon=True)
        self.engines = engines
        self.tick_s = tick_s
        self._stop_event = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        ticks = 0
        while not self._stop_event.wait(self.tick_s):
            due = int((time.monotonic() - start) / self.tick_s)
            while ticks < due:
                for engine in self.engines:
                    engine.increment_epoch()
                ticks += 1

    def stop(self) -> None:
        self._stop_event.set()


@dataclass(frozen=True)
class CompiledModule:
    sha256: str
    engine: Engine
    module: Module
    pre: InstancePre
    has_free: bool
    has_initialize: bool
    fuel: bool  # compiled with fuel accounting


@dataclass(frozen=True)
class _Flavor:
    """An engine with its linker. Fuel accounting is an engine-wide compile option that slows every
    guest, so only functions with a fuel budget get the fuel engine."""

    engine: Engine
    linker: Linker
    fingerprint: str


_EXPECTED_EXPORTS = {
    abi.ALLOC_EXPORT: (["i32"], ["i32"]),
    abi.HANDLE_EXPORT: (["i32", "i32"], ["i64"]),
    abi.MARKER_EXPORT: ([], []),
}
_OPTIONAL_EXPORTS = {abi.FREE_EXPORT: (["i32", "i32"], []), "_initialize": ([], [])}


def _sig(ty: FuncType) -> tuple[list[str], list[str]]:
    return [str(p) for p in ty.params], [str(r) for r in ty.results]


def check_interface(module: Module, allowed_wasi: frozenset[str]) -> tuple[bool, bool]:
    """Refuse imports outside the granted set and check the ABI v1 exports. Returns (has_free, has_initialize)."""
    for imp in module.imports:
        qualified = f"{imp.module}.{imp.name}"
        ok = (
            isinstance(imp.type, FuncType)
            and (imp.module, imp.name) in host.HOST_FUNCTIONS
            and (imp.module == host.HIVE or imp.name in allowed_wasi)
        )
        if not ok:
            raise ForbiddenImport(f"the module imports {qualified}, which this function is not allowed", import_name=qualified)
        want = host.signature_names(host.HOST_FUNCTIONS[(imp.module, imp.name)][0])
        if _sig(imp.type) != want:
            raise InvalidModule(f"import {qualified} has the wrong type {_sig(imp.type)}, expected {want}")
    exports = {e.name: e.type for e in module.exports}
    if not isinstance(exports.get(abi.MEMORY_EXPORT), MemoryType):
        raise InvalidModule("the module does not export its memory as 'memory'")
    for name, want in _EXPECTED_EXPORTS.items():
        ty = exports.get(name)
        if ty is None:
            raise InvalidModule(f"the module does not export {name!r}: it is not an Edge Hive ABI v1 module (see docs/abi.md)")
        if not isinstance(ty, FuncType) or _sig(ty) != want:
            raise InvalidModule(f"export {name!r} must be a function {want[0]} -> {want[1]}")
    optional = {}
    for name, want in _OPTIONAL_EXPORTS.items():
        ty = exports.get(name)
        if ty is not None and (not isinstance(ty, FuncType) or _sig(ty) != want):
            raise InvalidModule(f"export {name!r} must be a function {want[0]} -> {want[1]}")
        optional[name] = ty is not None
    return optional[abi.FREE_EXPORT], optional["_initialize"]


def check_wasm_header(wasm: bytes) -> None:
    if len(wasm) < 8 or wasm[:4] != WASM_MAGIC:
        raise InvalidModule("the upload is not a WebAssembly module (no \\0asm header)")
    if wasm[4:8] != CORE_VERSION:
        raise InvalidModule("only core WebAssembly modules are supported (this looks like a component)")


class Sandbox:
    def __init__(self, cache_dir: str | Path, *, epoch_tick_ms: float = 1.0) -> None:
        self.tick_ms = epoch_tick_ms
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.flavors = {fuel: self._flavor(fuel) for fuel in (False, True)}
        self.engine = self.flavors[False].engine
        self.ticker = EpochTicker([f.engine for f in self.flavors.values()], epoch_tick_ms / 1000)
        self.ticker.start()

    @staticmethod
    def _flavor(fuel: bool) -> _Flavor:
        cfg = Config()
        cfg.epoch_interruption = True
        cfg.parallel_compilation = False
        cfg.cranelift_opt_level = "speed"
        cfg.consume_fuel = fuel
        engine = Engine(cfg)
        linker = Linker(engine)
        host.define_all(linker)
        knobs = f"{importlib.metadata.version('wasmtime')}|{platform.machine()}|epoch|speed|serial|fuel={fuel}"
        return _Flavor(engine, linker, hashlib.sha256(knobs.encode()).hexdigest()[:16])

    def close(self) -> None:
        self.ticker.stop()

    def deadline_ticks(self, timeout_ms: int) -> int:
        # +1: the current tick may be about to end.
        return int(-(-timeout_ms // self.tick_ms)) + 1

    def artifact_path(self, sha256: str, fuel: bool = False) -> Path:
        return self.cache_dir / f"{sha256}-{self.flavors[fuel].fingerprint}.cwasm"

    def compile(self, wasm: bytes, sha256: str, allowed_wasi: frozenset[str], fuel: bool = False) -> CompiledModule:
        """Validate and compile, check the interface, and write the artifact. Slow: call off the event loop."""
        check_wasm_header(wasm)
        try:
            module = Module(self.flavors[fuel].engine, wasm)
        except WasmtimeError as e:
            raise InvalidModule(f"the module does not validate: {_first_line(e)}") from None
        compiled = self._prepare(sha256, module, allowed_wasi, fuel)
        self._write_artifact(sha256, module, fuel)
        return compiled

    def load(self, sha256: str, wasm: bytes | None, allowed_wasi: frozenset[str], fuel: bool = False) -> CompiledModule:
        """Load the cached artifact (mmap), compiling from `wasm` only when the cache lacks it."""
        path = self.artifact_path(sha256, fuel)
        if path.exists():
            try:
                module = Module.deserialize_file(self.flavors[fuel].engine, str(path))
            except WasmtimeError as e:
                log.warning("artifact %s unusable (%s); recompiling", path.name, _first_line(e))
                path.unlink(missing_ok=True)  # else _write_artifact keeps the bad file forever
            else:
                return self._prepare(sha256, module, allowed_wasi, fuel)
        if wasm is None:
            raise FileNotFoundError(path)
        return self.compile(wasm, sha256, allowed_wasi, fuel)

    def _prepare(self, sha256: str, module: Module, allowed_wasi: frozenset[str], fuel: bool) -> CompiledModule:
        has_free, has_init = check_interface(module, allowed_wasi)
        flavor = self.flavors[fuel]
        try:
            pre = flavor.linker.instantiate_pre(module)
        except WasmtimeError as e:
            raise InvalidModule(f"the module cannot be linked: {_first_line(e)}") from None
        return CompiledModule(sha256, flavor.engine, module, pre, has_free, has_init, fuel)

    def _write_artifact(self, sha256: str, module: Module, fuel: bool) -> None:
        path = self.artifact_path(sha256, fuel)
        if path.exists():
            return
        fd, tmp = tempfile.mkstemp(dir=self.cache_dir, prefix=".tmp-", suffix=".cwasm")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(module.serialize())
            os.replace(tmp, path)  # atomic: readers mmap whole files only
        except BaseException:
            os.unlink(tmp)
            raise


def _first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
