"""AssemblyScript functions: npm installs the compiler and json-as, asc builds the module.

The function folder has a package.json that pins `assemblyscript`, `json-as` and
`@assemblyscript/wasi-shim` (the versions of hive/sdk/assemblyscript/package.json). The SDK itself is
not an npm dependency: every build copies the installed hive package's copy into
node_modules/edge-hive, so the SDK always matches the server, wherever the function folder lives.

The build compiles a generated entry, node_modules/.edge-hive/entry.ts, that re-exports the ABI
functions and imports the function's source (assembly/index.ts by default). json-as 1.6.0's transform
demotes any entry file named assembly/index.ts to a library file, which would leave an empty module.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from hive.build import Echo, run_tool
from hive.errors import BuildError
from hive.sandbox.inspect import SDK_EXPORTS

SDK_DIR = Path(__file__).resolve().parent.parent / "sdk" / "assemblyscript"
SDK_FILES = ("package.json", "index.ts", "asconfig.json", "assembly")
DEFAULT_ENTRY = "assembly/index.ts"
ENTRY_DIR = Path("node_modules") / ".edge-hive"
ASC = Path("node_modules") / "assemblyscript" / "bin" / "asc.js"
INSTALL_HINT = "install Node.js 20+ and npm (Debian: `apt-get install nodejs npm`)"
# json-as's SWAR string serializer splits surrogate pairs that straddle an 8-byte block (1.6.0);
# the naive backend is correct and smaller.
ASC_ENV = {"JSON_MODE": "naive"}
EXPORTS = SDK_EXPORTS
IMPORTS_HINT = (
    'declare host functions only with @external("hive", ...) or through the WASI shim, and keep '
    "the SDK's asconfig.json (or extend it) so abort, trace and seed stay off `env`"
)
INTERFACE_HINT = "keep the SDK's asconfig.json and entry"


def sdk_versions() -> dict[str, str]:
    """The exact versions of the compiler and libraries the SDK is written against."""
    return json.loads((SDK_DIR / "package.json").read_text(encoding="utf-8"))["dependencies"]


def _which(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BuildError(f"the AssemblyScript toolchain needs {tool}, which is not on PATH: {INSTALL_HINT}")
    return path


def _stamp(folder: Path) -> str:
    h = hashlib.sha256()
    for name in ("package.json", "package-lock.json"):
        p = folder / name
        h.update(name.encode() + b"\0" + (p.read_bytes() if p.is_file() else b"") + b"\0")
    return h.hexdigest()


def _check_pins(folder: Path, echo: Echo | None) -> None:
    try:
        pkg = json.loads((folder / "package.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BuildError(f"{folder}/package.json: {e}") from None
    deps = {**pkg.get("dependencies", {}), **pkg.get("devDependencies", {})}
    missing = [name for name in sdk_versions() if name not in deps]
    if missing:
        want = ", ".join(f'"{n}": "{v}"' for n, v in sdk_versions().items())
        raise BuildError(f"{folder}/package.json must depend on {' and '.join(missing)}: add {want}")
    for name, version in sdk_versions().items():
        if name in deps and deps[name] != version and echo:
            echo(f"warning: package.json pins {name} {deps[name]}; the Edge Hive SDK is built for {version}")


def install(folder: Path, echo: Echo | None) -> None:
    """npm ci (with a lockfile) or npm install, when node_modules is missing or package.json changed."""
    stamp_file = folder / ENTRY_DIR / "installed"
    stamp = _stamp(folder)
    if (folder / ASC).is_file() and stamp_file.is_file() and stamp_file.read_text() == stamp:
        return
    npm = _which("npm")
    quiet = ["--no-audit", "--no-fund", "--loglevel=error"]
    if (folder / "package-lock.json").is_file():
        cmd = [npm, "ci", *quiet]
    else:
        # No lockfile written into the user's folder; run `npm install` yourself to keep one.
        cmd = [npm, "install", "--no-package-lock", *quiet]
    if echo:
        echo(f"installing npm packages in {folder} (once; again when package.json changes)")
    run_tool(cmd, folder, "npm install", echo)
    if not (folder / ASC).is_file():
        raise BuildError(f"{folder}: npm installed no AssemblyScript compiler (is assemblyscript in package.json?)")
    stamp_file.parent.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(stamp)


def copy_sdk(folder: Path) -> None:
    dest = folder / "node_modules" / "edge-hive"
    if dest.is_symlink() or dest.is_file():
        dest.unlink()
    elif dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    for name in SDK_FILES:
        src = SDK_DIR / name
        if src.is_dir():
            shutil.copytree(src, dest / name)
        else:
            shutil.copy2(src, dest / name)


def write_entry(folder: Path, source: str) -> Path:
    entry = folder / ENTRY_DIR / "entry.ts"
    entry.parent.mkdir(parents=True, exist_ok=True)
    module = Path(source).with_suffix("").as_posix()
    entry.write_text(
        "// Generated by edge-hive function build: the module's exports, then the function's code.\n"
        f'export {{ {", ".join(EXPORTS)} }} from "edge-hive";\n'
        f'import "../../{module}";\n',
        encoding="utf-8",
    )
    return entry


def build(folder: Path, fn: dict[str, Any], echo: Echo | None) -> Path:
    node = _which("node")
    _which("npm")
    if not (folder / "package.json").is_file():
        raise BuildError(
            f"{folder}: no package.json (AssemblyScript functions need one; see docs/sdk-assemblyscript.md)"
        )
    sources = fn.get("sources") or [DEFAULT_ENTRY]
    source = sources[0]
    if not (folder / source).is_file() or not source.endswith(".ts"):
        raise BuildError(f'{folder}: entry {source} not found (set [function] sources = ["assembly/index.ts"])')
    _check_pins(folder, echo)
    install(folder, echo)
    copy_sdk(folder)
    entry = write_entry(folder, source)
    own = folder / "asconfig.json"  # a function's own config should extend the SDK's
    config = own if own.is_file() else folder / "node_modules" / "edge-hive" / "asconfig.json"
    out = folder / f"{fn['name']}.wasm"
    cmd = [
        node,
        str(ASC),
        entry.relative_to(folder).as_posix(),
        "--config",
        os.path.relpath(config, folder),
        "--target",
        "release",
        "--outFile",
        str(out),
    ]
    out.unlink(missing_ok=True)  # never mistake an old module for this build's
    if echo:
        echo("with " + " ".join(f"{k}={v}" for k, v in ASC_ENV.items()) + ":")
    run_tool(cmd, folder, f"compiling {fn['name']}", echo, env={**os.environ, **ASC_ENV})
    if not out.is_file():
        raise BuildError(f"compiling {fn['name']}: asc wrote no {out.name}")
    return out  # hive.build checks it the way deploy will
