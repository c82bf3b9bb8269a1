"""The per-process wasmtime engine: configuration, epoch ticker, compile and artifact cache.

Create a Sandbox after fork, never in the gunicorn master (compiling in a child of a process that
compiled with parallel compilation can hang).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from wasmtime import Engine, InstancePre, Linker, Module, WasmtimeError

from hive.errors import CompileFailed, InvalidModule
from hive.sandbox import artifacts, compiler, fastcall, features, host
from hive.sandbox.inspect import check_interface, check_wasm_header, first_line

__all__ = ["CompiledModule", "EpochTicker", "Sandbox", "check_interface", "check_wasm_header"]

log = logging.getLogger("hive.sandbox")


class EpochTicker(threading.Thread):
    """Increments the engine epoch in step with the wall clock, catching up after any delay.

    A deadline is counted from the current epoch, so one set while the ticker lags behind the clock (it
    waited for a core or the GIL) would be charged that lag when it catches up: lag() says how many
    ticks to add, so a call gets its whole time limit from when it starts."""

    def __init__(self, engines: list[Engine], tick_s: float) -> None:
        super().__init__(name="hive-epoch", daemon=True)
        self.engines = engines  # kept alive: the incrementers hold their addresses
        self._increments = [fastcall.epoch_incrementer(e) for e in engines]
        self.tick_s = tick_s
        self.per_s = 1 / tick_s
        self.began = time.monotonic()
        self.ticks = 0  # epochs given so far
        self._stopping = False

    def lag(self) -> int:
        """Ticks the epoch is behind the wall clock (0 when in step)."""
        behind = int((time.monotonic() - self.began) * self.per_s) - self.ticks
        return behind if behind > 0 else 0

    def run(self) -> None:
        # One GIL acquisition per tick: time.sleep waits without it and without the lock an
        # Event.wait makes each time, and the increments do not give it up.
        start, tick_s, increments = self.began, self.tick_s, self._increments
        while True:
            time.sleep(tick_s)
            if self._stopping:
                return
            due = int((time.monotonic() - start) / tick_s)
            while self.ticks < due:
                for increment in increments:
                    increment()
                self.ticks += 1

    def stop(self) -> None:
        self._stopping = True  # seen within a tick


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


class Sandbox:
    def __init__(
        self, cache_dir: str | Path, *, epoch_tick_ms: float = 1.0, compile_limits: compiler.CompileLimits | None = None
    ) -> None:
        self.tick_ms = epoch_tick_ms
        self.compile_limits = compile_limits or compiler.CompileLimits.defaults()
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        artifacts.sweep_tmp(self.cache_dir)  # of writers that died mid-write
        self._verified: dict[Path, tuple[int, ...]] = {}
        self.flavors = {fuel: self._flavor(fuel) for fuel in (False, True)}
        self.engine = self.flavors[False].engine
        self.ticker = EpochTicker([f.engine for f in self.flavors.values()], epoch_tick_ms / 1000)
        self.ticker.start()

    @staticmethod
    def _flavor(fuel: bool) -> _Flavor:
        engine = Engine(features.engine_config(fuel))
        linker = Linker(engine)
        host.define_all(linker)
        return _Flavor(engine, linker, features.fingerprint(fuel))

    def close(self) -> None:
        self.ticker.stop()

    def deadline_ticks(self, timeout_ms: float) -> int:
        """Epoch ticks from now for a time limit (what the ticker lags behind included)."""
        return self.limit_ticks(timeout_ms) + self.ticker.lag()

    def limit_ticks(self, timeout_ms: float) -> int:
        # +1: the current tick may be about to end.
        return int(-(-timeout_ms // self.tick_ms)) + 1

    def artifact_path(self, sha256: str, fuel: bool = False) -> Path:
        return self.cache_dir / f"{sha256}-{self.flavors[fuel].fingerprint}.cwasm"

    def compile(self, wasm: bytes, sha256: str, allowed_wasi: frozenset[str], fuel: bool = False) -> CompiledModule:
        """Validate and compile (in a bounded subprocess, hive.sandbox.compiler), check the interface,
        and write the artifact. Slow: call off the event loop."""
        check_wasm_header(wasm)
        compiler.check_shape(wasm, self.compile_limits)
        path = self.artifact_path(sha256, fuel)
        module = self._deserialize(path, fuel)  # another worker may have compiled it meanwhile
        if module is not None:
            return self._prepare(sha256, module, allowed_wasi, fuel)
        try:
            tmp = artifacts.tmp_file(self.cache_dir)  # and the cache dir again, if someone removed it
        except OSError as e:
            raise artifacts.no_space(e, self.cache_dir) or e from None
        try:
            compiler.compile_to(tmp, wasm, fuel, self.compile_limits)
            # Loaded from memory, not mapped: this process keeps its own copy, as when it compiled
            # in-process, so nothing done to the file later can reach it.
            data = tmp.read_bytes()
            fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
            try:
                recorded = artifacts.recorded_digest(fd, tmp)
            finally:
                os.close(fd)
            if recorded != artifacts.digest(data):
                raise CompileFailed(f"the compiler's artifact for {sha256[:12]} does not match its digest")
            try:
                module = Module.deserialize(self.flavors[fuel].engine, data)
            except WasmtimeError as e:
                raise CompileFailed(
                    f"the compiler's artifact for {sha256[:12]} does not load: {first_line(e)}"
                ) from None
            compiled = self._prepare(sha256, module, allowed_wasi, fuel)  # a refused module leaves no artifact
            artifacts.publish(tmp, path)
        except OSError as e:
            artifacts.discard(tmp)
            raise artifacts.no_space(e, self.cache_dir) or e from None
        except BaseException:
            artifacts.discard(tmp)
            raise
        return compiled

    def load(self, sha256: str, wasm: bytes | None, allowed_wasi: frozenset[str], fuel: bool = False) -> CompiledModule:
        """Load the cached artifact (mmap) once its digest checks out, compiling from `wasm` only when
        the cache lacks a trustworthy one."""
        module = self._deserialize(self.artifact_path(sha256, fuel), fuel)
        if module is not None:
            return self._prepare(sha256, module, allowed_wasi, fuel)
        if wasm is None:
            raise FileNotFoundError(self.artifact_path(sha256, fuel))
        return self.compile(wasm, sha256, allowed_wasi, fuel)

    def _deserialize(self, path: Path, fuel: bool) -> Module | None:
        """The artifact at `path`, or None when there is none or it is not to be trusted (then it is
        deleted, so that the next compile writes a good one)."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return None
        try:
            st = os.fstat(fd)
            # Unchanged since this process checked it: same inode, size, mtime and ctime (which no
            # write can leave as it was).
            identity = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
            if self._verified.get(path) != identity:
                problem = artifacts.problem(fd, path)
                if problem is not None:
                    log.warning("artifact %s is unusable: it %s; deleting it and recompiling", path.name, problem)
                    artifacts.discard(path)
                    return None
                self._verified[path] = identity
            try:
                # The descriptor, not the path: wasmtime maps the very file whose digest was checked.
                return Module.deserialize_file(self.flavors[fuel].engine, f"/proc/self/fd/{fd}")
            except WasmtimeError as e:
                log.warning("artifact %s unusable (%s); recompiling", path.name, first_line(e))
                artifacts.discard(path)  # else the next compile would keep the bad file forever
                return None
        finally:
            os.close(fd)

    def forget(self, sha256s: Iterable[str]) -> None:
        """Remove the artifacts of modules no version uses any more (Registry.on_drop)."""
        for sha in sha256s:
            for fuel in self.flavors:
                path = self.artifact_path(sha, fuel)
                self._verified.pop(path, None)
                artifacts.discard(path)

    def _prepare(self, sha256: str, module: Module, allowed_wasi: frozenset[str], fuel: bool) -> CompiledModule:
        iface = check_interface(module, allowed_wasi)
        flavor = self.flavors[fuel]
        try:
            pre = flavor.linker.instantiate_pre(module)
        except WasmtimeError as e:
            raise InvalidModule(f"the module cannot be linked: {first_line(e)}") from None
        return CompiledModule(sha256, flavor.engine, module, pre, iface.has_free, iface.has_initialize, fuel)
