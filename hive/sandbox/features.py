"""The WebAssembly features a guest may use, and the one engine configuration that every compile (in
the compiler subprocess, in a build's check) and every load shares. docs/security.md lists them.

On: WebAssembly 2.0, which every SDK's toolchain targets (LLVM for C, Rust and Zig; Binaryen for
AssemblyScript). Off: every proposal whose runtime state a store's limits do not bound (the GC heap,
shared memories and threads, exception and stack-switching state), memory64 and custom page sizes
(`memory_mb` is counted in 64 KiB pages of a 32-bit memory), and the rest until a guest needs them.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform

from wasmtime import Config

# Config attribute -> enabled. Sign extension, non-trapping float-to-int, mutable globals and
# extended constant expressions have no switch in wasmtime-py; they are always on and add no state.
FEATURES: dict[str, bool] = {
    "wasm_multi_value": True,
    "wasm_bulk_memory": True,
    "wasm_reference_types": True,  # funcref tables and the table-index encoding LLVM emits; no externref (no GC heap)
    "wasm_simd": True,  # fixed-width 128-bit SIMD, deterministic
    "wasm_relaxed_simd": False,  # results differ by CPU
    "wasm_threads": False,
    "wasm_tail_call": False,
    "wasm_multi_memory": False,
    "wasm_memory64": False,
    "wasm_custom_page_sizes": False,
    "wasm_exceptions": False,
    "wasm_function_references": False,
    "wasm_gc": False,
    "wasm_wide_arithmetic": False,
    "wasm_stack_switching": False,
    "wasm_component_model": False,
}
# No GC heap at all: with it, externref values live outside linear memory, where memory_mb does not count them.
GC_SUPPORT = False
OPT_LEVEL = "speed"


def engine_config(fuel: bool) -> Config:
    cfg = Config()
    for name, on in FEATURES.items():
        setattr(cfg, name, on)
    cfg.gc_support = GC_SUPPORT
    cfg.epoch_interruption = True
    # Compiler threads in a process that forks, or whose parent compiled with them, can hang.
    cfg.parallel_compilation = False
    cfg.cranelift_opt_level = OPT_LEVEL
    cfg.consume_fuel = fuel
    return cfg


def fingerprint(fuel: bool) -> str:
    """Names the artifacts of this configuration: a change of wasmtime, CPU or any knob gets new files."""
    enabled = ",".join(sorted(name for name, on in FEATURES.items() if on))
    knobs = (
        f"{importlib.metadata.version('wasmtime')}|{platform.machine()}|epoch|{OPT_LEVEL}|serial|fuel={fuel}"
        f"|gc={GC_SUPPORT}|{enabled}"
    )
    return hashlib.sha256(knobs.encode()).hexdigest()[:16]
