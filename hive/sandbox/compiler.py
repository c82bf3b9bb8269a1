"""Compiling a module where memory, CPU time and wall time are bounded: a fresh Python process
(`python -c ...hive.sandbox.compiler.main`), never a fork of a worker that runs wasmtime (DESIGN.md), with
RLIMIT_AS and RLIMIT_CPU set before it compiles, and killed past a wall-clock timeout.

A module with more functions or code than the settings allow is refused before any compile: a
300,000-function module of 2.6 MiB took 10.6 s and 1.6 GiB to compile. The child validates and
compiles with the server's engine configuration (hive.sandbox.features), and writes the serialized
artifact with its digest into a temp file the parent named; the parent loads it from there, checks
the interface, and moves it into place (hive.sandbox.engine).
"""

from __future__ import annotations

import json
import resource
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hive.errors import CompileFailed, HiveError, ModuleTooComplex

_EXIT_REFUSED = 2  # a HiveError, as JSON on stdout
_EXIT_MEMORY = 3
_STDERR_TAIL = 2000
# Not `-m hive.sandbox.compiler`: the package imports this module first, and runpy would run it twice.
_CHILD = "import sys; from hive.sandbox.compiler import main; sys.exit(main(sys.argv))"


@dataclass(frozen=True)
class CompileLimits:
    memory_mb: int  # address space of the compiler process
    timeout_s: float  # CPU time, and wall time
    max_functions: int
    max_code_bytes: int

    @classmethod
    def from_settings(cls, settings: Any) -> CompileLimits:
        return cls(
            settings.compile_memory_mb,
            settings.compile_timeout_s,
            settings.max_module_functions,
            settings.max_module_code_bytes,
        )

    @classmethod
    def defaults(cls) -> CompileLimits:
        from hive.settings import SETTINGS  # the defaults are declared there, once

        d = {s.name: s.default for s in SETTINGS}
        return cls(
            d["compile_memory_mb"], d["compile_timeout_s"], d["max_module_functions"], d["max_module_code_bytes"]
        )


def check_shape(wasm: bytes, limits: CompileLimits) -> None:
    """Refuse, before compiling, a module with more functions or code than the limits allow."""
    from hive.sandbox.inspect import shape

    s = shape(wasm)
    if s.functions > limits.max_functions:
        raise ModuleTooComplex(
            f"the module defines {s.functions} functions, more than max_module_functions ({limits.max_functions}): "
            "make it smaller, or raise the server setting max_module_functions",
            limit=limits.max_functions,
            setting="max_module_functions",
        )
    if s.code_bytes > limits.max_code_bytes:
        raise ModuleTooComplex(
            f"the module has {s.code_bytes} bytes of code, more than max_module_code_bytes ({limits.max_code_bytes}): "
            "make it smaller, or raise the server setting max_module_code_bytes",
            limit=limits.max_code_bytes,
            setting="max_module_code_bytes",
        )


def _too_much_memory(limits: CompileLimits) -> ModuleTooComplex:
    return ModuleTooComplex(
        f"compiling the module needed more than compile_memory_mb ({limits.memory_mb} MiB) of memory: "
        "make it smaller, or raise the server setting compile_memory_mb",
        limit=limits.memory_mb,
        setting="compile_memory_mb",
    )


def _too_long(limits: CompileLimits) -> ModuleTooComplex:
    return ModuleTooComplex(
        f"compiling the module took longer than compile_timeout_s ({limits.timeout_s:g} s): "
        "make it smaller, or raise the server setting compile_timeout_s",
        limit=limits.timeout_s,
        setting="compile_timeout_s",
    )


def compile_to(out: Path, wasm: bytes, fuel: bool, limits: CompileLimits) -> None:
    """Validate and compile `wasm` in a bounded subprocess, which writes the artifact to `out`.
    Raises the module's HiveError (InvalidModule, ModuleTooComplex, ...) or CompileFailed."""
    args = json.dumps({"out": str(out), "fuel": fuel, "memory_mb": limits.memory_mb, "cpu_s": limits.timeout_s})
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, args], input=wasm, capture_output=True, timeout=limits.timeout_s + 5
        )  # CPU time runs out first
    except subprocess.TimeoutExpired:  # run() has killed it
        raise _too_long(limits) from None
    if proc.returncode == 0:
        return
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode == _EXIT_REFUSED:
        raise _error_of(json.loads(proc.stdout))
    if proc.returncode == _EXIT_MEMORY or "memory allocation of" in stderr:
        raise _too_much_memory(limits)
    if proc.returncode in (-signal.SIGXCPU, -signal.SIGKILL):
        raise _too_long(limits)
    raise CompileFailed(
        f"the compiler process failed (exit status {proc.returncode}): {stderr[-_STDERR_TAIL:].strip()}"
    )


def _error_of(d: dict[str, Any]) -> HiveError:
    """The child's refusal as the HiveError it was (the codes are stable)."""

    def subclasses(c: type[HiveError]) -> list[type[HiveError]]:
        return [c, *(s for sub in c.__subclasses__() for s in subclasses(sub))]

    cls = {c.code: c for c in subclasses(HiveError)}.get(d.get("error", ""), CompileFailed)
    return cls(str(d.get("message", "")), **{k: v for k, v in d.items() if k not in ("error", "message")})


# --- the child ---


def _set_limits(memory_mb: int, cpu_s: float) -> None:
    memory = memory_mb << 20
    resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    cpu = max(1, int(-(-cpu_s // 1)))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL a second later
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _refuse(e: HiveError) -> int:
    sys.stdout.write(json.dumps(e.to_dict()))
    return _EXIT_REFUSED


def main(argv: list[str]) -> int:
    args = json.loads(argv[1])
    wasm = sys.stdin.buffer.read()
    _set_limits(args["memory_mb"], args["cpu_s"])
    from wasmtime import Engine

    from hive.sandbox import artifacts, features
    from hive.sandbox.inspect import compile_module

    try:
        module = compile_module(Engine(features.engine_config(args["fuel"])), wasm)
        artifacts.write_tmp(Path(args["out"]), module.serialize())
    except HiveError as e:
        return _refuse(e)
    except MemoryError:
        return _EXIT_MEMORY
    except OSError as e:
        full = artifacts.no_space(e, Path(args["out"]).parent)
        if full is None:
            raise
        return _refuse(full)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))  # python -m hive.sandbox.compiler '<json>' < module.wasm, by hand
