"""Build a function folder (hive.toml + sources) into a core wasm module for guest ABI v1."""

from __future__ import annotations

import importlib
import importlib.util
import shlex
import subprocess
import sys
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hive.errors import BuildError, HiveError, InvalidManifest, InvalidName
from hive.manifest import validate_name

MANIFEST = "hive.toml"
C_SDK_DIR = Path(__file__).resolve().parent / "sdk" / "c"
C_IMPORTS_HINT = (
    "use the SDK's hive_log and hive_config (hive/sdk/c/edge_hive.h) instead of libc functions "
    "that need files, sockets or processes"
)
# -Os with link-time optimization: hello is 9 KB instead of 12 at -O2 and runs as fast; -s drops DWARF and
# names, which the host does not read (a trap is reported by its code).
WASM_CFLAGS = ("--target=wasm32-wasi", "-Os", "-flto", "-mexec-model=reactor", "-s")
# The first compile builds wasi-libc into zig's cache, which takes about 20 s.
COMPILE_TIMEOUT_S = 600


def _manifest_path(path: str | Path) -> Path:
    p = Path(path)
    return p / MANIFEST if p.is_dir() else p


def load_function_manifest(path: str | Path) -> dict[str, Any]:
    """Parse hive.toml (given it or its folder) and check the [function] table."""
    file = _manifest_path(path)
    try:
        with file.open("rb") as f:
            doc = tomllib.load(f)
    except FileNotFoundError:
        raise InvalidManifest(f"{file} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise InvalidManifest(f"{file}: {e}") from None
    fn = doc.get("function")
    if not isinstance(fn, dict):
        raise InvalidManifest(f"{file}: missing [function] table")
    try:
        validate_name(fn.get("name"))  # fail at build, not at deploy; it is also the output file name
    except InvalidName as e:
        raise InvalidManifest(f"{file}: {e.message}") from None
    if not isinstance(fn.get("language"), str):
        raise InvalidManifest(f"{file}: [function] language must be a string")
    sources = fn.get("sources")
    if sources is not None and not (isinstance(sources, list) and all(isinstance(s, str) for s in sources)):
        raise InvalidManifest(f"{file}: [function] sources must be a list of strings")
    return doc


def deploy_manifest(path: str | Path) -> dict[str, Any]:
    """hive.toml's deploy sections ([limits], [rate_limit], [auth], [cors], [permissions], [config], and
    [function] isolation) as a deploy
    manifest: what `edge-hive function deploy` and `edge-hive dev` send with the module."""
    m = load_function_manifest(path)
    out: dict[str, Any] = {}
    for key in ("limits", "rate_limit", "auth", "cors"):
        if key in m:
            out[key] = m[key]
    for key in ("wasi", "allowed_hosts", "kv"):  # [permissions]: what the function may reach
        if key in m.get("permissions", {}):
            out[key] = m["permissions"][key]
    if "isolation" in m.get("function", {}):
        out["isolation"] = m["function"]["isolation"]
    if "config" in m:
        out["config"] = {k: str(v) for k, v in m["config"].items()}
    if _kind(m["function"]["language"]) != "wasm":
        out["kind"] = _kind(m["function"]["language"])  # the server compiles a JS bundle itself
    return out


def _kind(language: str) -> str:
    """What a language's build produces: "wasm", or "js" (hive/toolchains/typescript.py)."""
    return "js" if TOOLCHAINS.get(language) == "hive.toolchains.typescript" else "wasm"


# Other languages live in hive/toolchains/<module>.py as `build(folder, fn, echo) -> Path`, with
# optional IMPORTS_HINT and INTERFACE_HINT strings that a refused module's build error ends with.
TOOLCHAINS = {
    "zig": "hive.toolchains.zig",
    "rust": "hive.toolchains.rust",
    "assemblyscript": "hive.toolchains.assemblyscript",
    "typescript": "hive.toolchains.typescript",  # a bundle for the JS engine (KIND = "js"), not a wasm module
    "javascript": "hive.toolchains.typescript",
}

Echo = Callable[[str], None]


def build_function(path: str | Path, *, echo: Echo | None = None) -> Path:
    """Compile the function at `path` to <folder>/<name>.wasm and return that path."""
    file = _manifest_path(path)
    fn = load_function_manifest(file)["function"]
    folder = file.parent.resolve()
    language = fn["language"]
    if language == "c":
        out = build_c(folder, fn, echo)
        check_built_module(out, C_IMPORTS_HINT)
        return out
    module = TOOLCHAINS.get(language)
    if module is None:
        raise BuildError(f"unknown language {language!r}: use one of c, {', '.join(TOOLCHAINS)}")
    toolchain = importlib.import_module(module)
    out = toolchain.build(folder, fn, echo)
    if getattr(toolchain, "KIND", "wasm") != "wasm":  # a JS bundle: the server compiles and checks it at deploy
        return out
    check_built_module(out, getattr(toolchain, "IMPORTS_HINT", ""), getattr(toolchain, "INTERFACE_HINT", ""))
    return out


def run_tool(cmd: list[str], cwd: Path, what: str, echo: Echo | None, env: dict[str, str] | None = None) -> None:
    """Run one toolchain command, passing its progress lines to `echo` as they come; a failure
    becomes a BuildError carrying the tool's output (or, when `echo` already showed it, pointing to it)."""
    if echo:
        echo(shlex.join(cmd))
    try:
        proc = subprocess.Popen(
            cmd, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    except FileNotFoundError:
        raise BuildError(f"{what}: {cmd[0]} not found") from None
    output: list[str] = []
    assert proc.stdout is not None
    timer = threading.Timer(COMPILE_TIMEOUT_S, proc.kill)  # a silent, hung tool is killed too
    timer.start()
    try:
        with proc:
            for line in proc.stdout:  # cargo, npm and zig report progress on stderr, merged here
                output.append(line)
                if echo:
                    echo(line.rstrip("\n"))
    finally:
        timed_out = not timer.is_alive()
        timer.cancel()
    if timed_out and proc.returncode != 0:
        raise BuildError(f"{what} took longer than {COMPILE_TIMEOUT_S} s")
    if proc.returncode != 0:
        if echo:  # its output was just shown line by line: say so, never show it twice
            raise BuildError(f"{what} failed (exit status {proc.returncode}): see the output above")
        raise BuildError(f"{what} failed:\n{''.join(output[-200:]).strip()}")


def check_built_module(path: Path, imports_hint: str = "", interface_hint: str = "") -> None:
    """Fail the build (not the deploy) when the server would refuse the module: the module check of
    deploy (hive.sandbox.inspect, and the default function and code limits) with every WASI
    capability granted, since granting is the deploy's.
    A refused module is removed: it is no build result."""
    from hive.sandbox import compiler, inspect  # wasmtime, only once a compiler has produced a module

    try:
        wasm = path.read_bytes()
        compiler.check_shape(wasm, compiler.CompileLimits.defaults())  # the server's default limits
        module = inspect.compile_module(inspect.build_engine(), wasm)
        bad = inspect.unknown_imports(module)
        if bad:
            raise BuildError(
                f"{path.name} imports {listed(bad)}, which Edge Hive does not provide"
                + (f": {imports_hint}" if imports_hint else "")
            )
        inspect.check_interface(module, inspect.ALL_WASI)
    except BuildError:
        path.unlink(missing_ok=True)
        raise
    except HiveError as e:
        path.unlink(missing_ok=True)
        hint = f" ({interface_hint})" if interface_hint else ""
        raise BuildError(f"{path.name}: {e.message}{hint}", cause=e.code) from None


def listed(names: list[str]) -> str:
    return ", ".join(names[:5]) + (" ..." if len(names) > 5 else "")


def build_c(folder: Path, fn: dict[str, Any], echo: Echo | None) -> Path:
    sources = fn.get("sources") or sorted(p.name for p in folder.glob("*.c"))
    if not sources:
        raise BuildError(f"{folder}: no C sources (set [function] sources or add a .c file)")
    for src in sources:
        if not (folder / src).is_file():
            raise BuildError(f"{folder}: source {src} not found")
    if importlib.util.find_spec("ziglang") is None:
        raise BuildError(f"the C toolchain is missing: install it with `pip install ziglang` (into {sys.executable})")
    out = folder / f"{fn['name']}.wasm"
    cmd = [sys.executable, "-m", "ziglang", "cc", *WASM_CFLAGS, "-I", str(C_SDK_DIR), "-o", str(out), *sources]
    run_tool(cmd, folder, f"compiling {fn['name']}", echo)
    return out
