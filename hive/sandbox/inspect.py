"""What a guest module must look like, checked in one place: by deploy and load (hive.sandbox.engine)
and by every build after its compiler ran (hive.build), with the same messages and codes.

A module may import only host functions (each with its declared type, and WASI ones only when
granted) and must export its memory and the ABI v1 functions (docs/abi.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from wasmtime import Engine, FuncType, MemoryType, Module, WasmtimeError

from hive import abi
from hive.errors import ForbiddenImport, InvalidModule
from hive.sandbox import features, host

WASM_MAGIC = b"\0asm"
CORE_VERSION = b"\x01\x00\x00\x00"

REQUIRED_EXPORTS = {
    abi.ALLOC_EXPORT: (["i32"], ["i32"]),
    abi.HANDLE_EXPORT: (["i32", "i32"], ["i64"]),
    abi.MARKER_EXPORT: ([], []),
}
OPTIONAL_EXPORTS: dict[str, tuple[list[str], list[str]]] = {
    abi.FREE_EXPORT: (["i32", "i32"], []),
    "_initialize": ([], []),
}
# What the SDKs export (the builds name them to the linker, or re-export them).
SDK_EXPORTS = (abi.MARKER_EXPORT, abi.ALLOC_EXPORT, abi.FREE_EXPORT, abi.HANDLE_EXPORT)
# Every WASI function a manifest can grant: a build checks against all of them, since the grants
# are the deploy's to give.
ALL_WASI = frozenset(name for (module, name) in host.HOST_FUNCTIONS if module == host.WASI)


@dataclass(frozen=True)
class Interface:
    has_free: bool
    has_initialize: bool


def _sig(ty: FuncType) -> tuple[list[str], list[str]]:
    return [str(p) for p in ty.params], [str(r) for r in ty.results]


def build_engine() -> Engine:
    """An engine for checking a module outside the server (a build): configured as the server's, so
    that what it refuses to validate the server refuses too."""
    return Engine(features.engine_config(fuel=False))


def check_wasm_header(wasm: bytes) -> None:
    if len(wasm) < 8 or wasm[:4] != WASM_MAGIC:
        raise InvalidModule("the upload is not a WebAssembly module (no \\0asm header)")
    if wasm[4:8] != CORE_VERSION:
        raise InvalidModule("only core WebAssembly modules are supported (this looks like a component)")


def compile_module(engine: Engine, wasm: bytes) -> Module:
    """Header check, validation and compile; a module that does not validate is InvalidModule."""
    check_wasm_header(wasm)
    try:
        return Module(engine, wasm)
    except WasmtimeError as e:
        raise InvalidModule(f"the module does not validate: {reason(e)}") from None


def unknown_imports(module: Module) -> list[str]:
    """Imports no Edge Hive host provides, whatever the grants (sorted, qualified)."""
    return sorted(
        f"{i.module}.{i.name}"
        for i in module.imports
        if not isinstance(i.type, FuncType) or (i.module, i.name) not in host.HOST_FUNCTIONS
    )


def check_interface(module: Module, allowed_wasi: frozenset[str]) -> Interface:
    """Refuse imports outside the granted set and check the ABI v1 exports."""
    for imp in module.imports:
        qualified = f"{imp.module}.{imp.name}"
        ok = (
            isinstance(imp.type, FuncType)
            and (imp.module, imp.name) in host.HOST_FUNCTIONS
            and (imp.module == host.HIVE or imp.name in allowed_wasi)
        )
        if not ok:
            raise ForbiddenImport(
                f"the module imports {qualified}, which this function is not allowed", import_name=qualified
            )
        assert isinstance(imp.type, FuncType) and imp.name is not None  # both checked by `ok`
        want = host.signature_names(host.HOST_FUNCTIONS[(imp.module, imp.name)][0])
        if _sig(imp.type) != want:
            raise InvalidModule(f"import {qualified} has the wrong type {_sig(imp.type)}, expected {want}")
    exports = {e.name: e.type for e in module.exports}
    if not isinstance(exports.get(abi.MEMORY_EXPORT), MemoryType):
        raise InvalidModule("the module does not export its memory as 'memory'")
    for name, want in REQUIRED_EXPORTS.items():
        ty = exports.get(name)
        if ty is None:
            raise InvalidModule(
                f"the module does not export {name!r}: it is not an Edge Hive ABI v1 module (see docs/abi.md)"
            )
        if not isinstance(ty, FuncType) or _sig(ty) != want:
            raise InvalidModule(f"export {name!r} must be a function {want[0]} -> {want[1]}")
    present = {}
    for name, want in OPTIONAL_EXPORTS.items():
        ty = exports.get(name)
        if ty is not None and (not isinstance(ty, FuncType) or _sig(ty) != want):
            raise InvalidModule(f"export {name!r} must be a function {want[0]} -> {want[1]}")
        present[name] = ty is not None
    return Interface(has_free=present[abi.FREE_EXPORT], has_initialize=present["_initialize"])


def reason(e: Exception) -> str:
    """wasmtime's first line and, when it has a cause chain, the root cause: "failed to parse
    WebAssembly module" alone does not say that a disabled proposal is the problem."""
    lines = [line.strip() for line in str(e).strip().splitlines() if line.strip()]
    if len(lines) < 2 or lines[-1] == "Caused by:":
        return first_line(e)
    root = lines[-1].split(": ", 1)[1] if lines[-1][:1].isdigit() and ": " in lines[-1] else lines[-1]
    return f"{lines[0]}: {root}"


def first_line(e: Exception) -> str:
    return str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__


@dataclass(frozen=True)
class Shape:
    """What a module asks of the compiler, read from its section headers without compiling it."""

    functions: int  # defined in the module (imports excluded)
    code_bytes: int  # size of the code section


def _leb_u32(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    for _ in range(5):
        if pos >= len(buf):
            raise ValueError("truncated")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise ValueError("LEB128 too long")


def shape(wasm: bytes) -> Shape:
    """Function count and code size from the section headers. A malformed binary yields what could be
    read: validation (the compile) refuses it with wasmtime's reason."""
    functions = code = 0
    pos = 8
    try:
        while pos < len(wasm):
            section_id = wasm[pos]
            size, body = _leb_u32(wasm, pos + 1)
            if section_id == 3:  # function section: a vector of type indices, one per defined function
                functions, _ = _leb_u32(wasm, body)
            elif section_id == 10:
                code = size
            pos = body + size
    except ValueError:
        pass
    return Shape(functions, code)
