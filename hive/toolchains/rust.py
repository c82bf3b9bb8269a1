"""Rust guests: Debian's cargo and rustc (1.63) build a wasm32-wasi cdylib, offline.

Crates come from the cargo directory source the librust-*-dev packages fill
(/usr/share/cargo/registry), and the `edge-hive-wasm` dependency is patched to the SDK shipped inside
this package, so a function folder anywhere builds. Every setting is a `--config` flag and CARGO_HOME
is private to the build: nothing is written to ~/.cargo, and in the function folder only target/.
"""

from __future__ import annotations

import json
import os
import shutil
import tomllib
from pathlib import Path
from typing import Any

from hive.build import Echo, run_tool
from hive.errors import BuildError

SDK_DIR = Path(__file__).resolve().parent.parent / "sdk" / "rust" / "edge-hive-wasm"
# Debian's toolchain, named by path: rustup's cargo and rustc usually come first on PATH and have no
# wasm targets.
CARGO = Path("/usr/bin/cargo")
RUSTC = Path("/usr/bin/rustc")
LINKER = Path("/usr/bin/rust-lld")  # a symlink to lld-14, which rustc only recommends
WASI_STD = Path("/usr/lib/rustlib/wasm32-wasi/lib")
REGISTRY = Path("/usr/share/cargo/registry")
TARGET = "wasm32-wasi"
PACKAGES = "rustc cargo libstd-rust-dev-wasm32 lld-14 librust-serde-json-dev librust-chrono-dev"
INSTALL_COMMAND = f"apt-get install {PACKAGES}"
IMPORTS_HINT = (
    "std::fs, std::net, std::process and std::thread need host functions Edge Hive does not offer: "
    "use the SDK's log macros and std::env::var for config instead (docs/sdk-rust.md)"
)
INTERFACE_HINT = "define the handler with #[edge_function] from edge-hive-wasm"


def missing_toolchain_message(missing: Path) -> str:
    return (
        f"the Rust toolchain is missing ({missing} not found): install it with `{INSTALL_COMMAND}` "
        "(scripts/toolchains/rust.sh does it)"
    )


def check_toolchain() -> None:
    for path in (CARGO, RUSTC, LINKER, WASI_STD, REGISTRY):
        if not path.exists():  # follows symlinks: a dangling rust-lld counts as missing
            raise BuildError(missing_toolchain_message(path))


def cargo_command(target_dir: Path) -> list[str]:
    def config(key: str, value: str) -> list[str]:
        return ["--config", f"{key}={json.dumps(value)}"]  # a JSON string is a valid TOML string

    return [
        str(CARGO),
        "build",
        "--release",
        "--offline",
        "--target",
        TARGET,
        "--target-dir",
        str(target_dir),
        *config("source.crates-io.replace-with", "debian"),
        *config("source.debian.directory", str(REGISTRY)),
        *config("patch.crates-io.edge-hive-wasm.path", str(SDK_DIR)),
        *config(f"target.{TARGET}.linker", str(LINKER)),
    ]


def _lib_name(cargo_toml: Path) -> str:
    try:
        doc: dict[str, Any] = tomllib.loads(cargo_toml.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise BuildError(f"{cargo_toml}: {e}") from None
    lib = doc.get("lib", {})
    if "cdylib" not in lib.get("crate-type", []):
        raise BuildError(f'{cargo_toml}: set crate-type = ["cdylib"] in [lib] to build a wasm module')
    name = lib.get("name") or doc.get("package", {}).get("name")
    if not isinstance(name, str):
        raise BuildError(f"{cargo_toml}: no [package] name")
    return name.replace("-", "_")


def build(folder: Path, fn: dict[str, Any], echo: Echo | None) -> Path:
    cargo_toml = folder / "Cargo.toml"
    if not cargo_toml.is_file():
        raise BuildError(f"{folder}: no Cargo.toml (a Rust function is a cdylib crate)")
    lib_name = _lib_name(cargo_toml)
    check_toolchain()
    target_dir = folder / "target"
    # The caller's CARGO_* and RUST* variables (CARGO_TARGET_DIR, RUSTFLAGS, a rustup RUSTC) would
    # redirect or reconfigure the build.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CARGO", "RUST"))}
    env.update(CARGO_HOME=str(target_dir / "cargo-home"), RUSTC=str(RUSTC))
    lock = folder / "Cargo.lock"
    had_lock = lock.exists()
    try:
        run_tool(cargo_command(target_dir), folder, f"building {fn['name']}", echo, env)
    finally:
        # Resolved against Debian's registry, whose checksums crates.io would reject: don't leave it.
        if not had_lock:
            lock.unlink(missing_ok=True)
    out = folder / f"{fn['name']}.wasm"
    shutil.copyfile(target_dir / TARGET / "release" / f"{lib_name}.wasm", out)
    return out
