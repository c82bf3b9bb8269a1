"""Zig functions: `zig build-exe` for wasm32-wasi with the SDK (hive/sdk/zig/edge_hive.zig) as a module.

The Zig compiler is the pip package `ziglang`, pinned to one version: Zig's standard library changes
between minor versions, and the SDK is written against this one.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import sys
from pathlib import Path
from typing import Any

from hive.build import Echo, run_tool
from hive.errors import BuildError
from hive.sandbox.inspect import SDK_EXPORTS

ZIG_VERSION = "0.17.1"  # keep in step with the ziglang pin in pyproject.toml
SDK = Path(__file__).resolve().parent.parent / "sdk" / "zig" / "edge_hive.zig"
SDK_MODULE = "edge_hive"
EXPORTS = SDK_EXPORTS
IMPORTS_HINT = (
    "Zig's std.debug.print, std.fs, std.Io and std.log without "
    "`pub const std_options: std.Options = .{ .logFn = edge_hive.logFn };` need them: "
    "use edge_hive.log, edge_hive.env and edge_hive.now instead (docs/sdk-zig.md)"
)
ROOT_CANDIDATES = ("main.zig", "src/main.zig")
INSTALL = f"pip install ziglang=={ZIG_VERSION}"
# Zig's default stack is 16 MiB of linear memory per instance; 1 MiB is plenty for a handler.
STACK_BYTES = 1 << 20


def check_zig() -> None:
    """The pinned ziglang must be importable by this Python; another minor version won't build the SDK."""
    if importlib.util.find_spec("ziglang") is None:
        raise BuildError(f"the Zig toolchain is missing: install it with `{INSTALL}` (into {sys.executable})")
    try:
        found = importlib.metadata.version("ziglang")
    except importlib.metadata.PackageNotFoundError:
        found = "unknown"
    if found.split(".")[:2] != ZIG_VERSION.split(".")[:2]:
        raise BuildError(f"the Zig SDK needs Zig {ZIG_VERSION}, but ziglang {found} is installed: `{INSTALL}`")


def root_source(folder: Path, fn: dict[str, Any]) -> str:
    sources = fn.get("sources")
    candidates = sources[:1] if sources else [c for c in ROOT_CANDIDATES if (folder / c).is_file()][:1]
    if not candidates:
        raise BuildError(f"{folder}: no Zig root file (add main.zig or src/main.zig, or set [function] sources)")
    root = candidates[0]
    if not (folder / root).is_file():
        raise BuildError(f"{folder}: source {root} not found")
    return root


def build(folder: Path, fn: dict[str, Any], echo: Echo | None) -> Path:
    check_zig()
    root = root_source(folder, fn)
    out = folder / f"{fn['name']}.wasm"
    cache = folder / ".zig-cache"
    cache.mkdir(exist_ok=True)
    ignore = cache / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Zig's build cache, written by edge-hive function build\n*\n")
    cmd = [
        sys.executable,
        "-m",
        "ziglang",
        "build-exe",
        "-target",
        "wasm32-wasi",
        "-OReleaseSmall",
        "-fno-entry",
        "-fstrip",
        "--stack",
        str(STACK_BYTES),
        *(f"--export={name}" for name in EXPORTS),
        "--cache-dir",
        str(cache),
        "--name",
        fn["name"],
        "--dep",
        SDK_MODULE,
        f"-Mroot={root}",
        f"-M{SDK_MODULE}={SDK}",
        f"-femit-bin={out}",
    ]
    out.unlink(missing_ok=True)  # never mistake an old module for this build's
    run_tool(cmd, folder, f"compiling {fn['name']}", echo)
    return out  # hive.build checks it the way deploy will
