"""TypeScript and JavaScript functions: esbuild bundles the function into one ES module for the engine.

The function folder holds index.ts (Supabase's layout; or index.js, or [function] sources), hive.toml
and whatever it imports by relative path (`../_shared/cors.ts` too). esbuild comes from npm, pinned by
hive/sdk/typescript/package.json, and is installed once into the cache dir. The packages a function
imports (`npm:` specifiers, bare imports mapped by a deno.json/import_map.json or named in a
package.json, esm.sh URLs) are installed from the npm registry into the cache too, one node_modules per
set of packages, shared by every function that imports the same set.

The output is <folder>/dist/<name>.js: the bundle with its source map inline at its end (one upload
carries both; the server keeps the map to point stack traces at the .ts lines), and <name>.js.map beside
it. dist/, not the folder itself: a JavaScript function's own index.js must never be overwritten, and
`edge-hive dev` ignores dist/ (a build's output must not trigger the next build).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from hive.build import Echo, run_tool
from hive.errors import BuildError

KIND = "js"  # hive.build: the output is a bundle for the JS engine, not a wasm module
SDK_DIR = Path(__file__).resolve().parent.parent / "sdk" / "typescript"
BUNDLER = SDK_DIR / "bundle.mjs"
DEFAULT_ENTRIES = ("index.ts", "index.js", "index.tsx", "index.mjs")
IMPORT_MAPS = ("deno.json", "import_map.json")
CACHE_ENV = "HIVE_TS_CACHE_DIR"
OUT_DIR = "dist"
INSTALL_HINT = "install Node.js 18+ and npm (Debian: `apt-get install nodejs npm`)"
NPM_QUIET = ("--no-audit", "--no-fund", "--loglevel=error", "--no-update-notifier")


def esbuild_version() -> str:
    deps = json.loads((SDK_DIR / "package.json").read_text(encoding="utf-8"))["dependencies"]
    return str(deps["esbuild"])


def cache_dir() -> Path:
    """$HIVE_TS_CACHE_DIR, else $XDG_CACHE_HOME/edge-hive/typescript (~/.cache/...)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edge-hive" / "typescript"


def _which(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise BuildError(f"TypeScript functions are bundled with esbuild, which needs {tool} on PATH: {INSTALL_HINT}")
    return path


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    """One installer per cache entry at a time (parallel builds, test sessions); the others wait and reuse."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _npm_install(directory: Path, packages: dict[str, str], what: str, echo: Echo | None) -> None:
    """package.json with `packages`, then npm install, once: a `done` stamp marks a finished install."""
    done = directory / ".done"
    if done.is_file():
        return
    with _locked(directory):
        if done.is_file():
            return
        (directory / "package.json").write_text(json.dumps({"private": True, "dependencies": packages}, indent=2))
        if echo:
            echo(f"installing {what} from npm into {directory} (once)")
        run_tool([_which("npm"), "install", *NPM_QUIET], directory, f"npm install ({what})", echo)
        done.write_text(json.dumps(packages))


def install_esbuild(echo: Echo | None = None) -> Path:
    """esbuild's JS API module, from the cache (installed on first use)."""
    version = esbuild_version()
    directory = cache_dir() / f"esbuild-{version}"
    _npm_install(directory, {"esbuild": version}, f"esbuild {version}", echo)
    main = directory / "node_modules" / "esbuild" / "lib" / "main.js"
    if not main.is_file():
        raise BuildError(f"npm installed no esbuild into {directory}: delete that folder and build again")
    return main


def install_packages(packages: dict[str, str], echo: Echo | None = None) -> Path:
    """A node_modules holding `packages` (name -> version range), shared by builds that import the same set."""
    key = hashlib.sha256(json.dumps(packages, sort_keys=True).encode()).hexdigest()[:16]
    directory = cache_dir() / "packages" / key
    if not packages:
        directory.mkdir(parents=True, exist_ok=True)
        return directory
    _npm_install(directory, packages, ", ".join(f"{n}@{v}" for n, v in sorted(packages.items())), echo)
    return directory


def _entry(folder: Path, fn: dict[str, Any]) -> Path:
    sources = fn.get("sources")
    candidates = sources[:1] if sources else list(DEFAULT_ENTRIES)
    for name in candidates:
        if (folder / name).is_file():
            return folder / name
    raise BuildError(
        f'{folder}: no entry file (looked for {", ".join(candidates)}; set [function] sources = ["index.ts"])'
    )


def _import_map(folder: Path, fn: dict[str, Any]) -> tuple[dict[str, str], Path]:
    """The "imports" of [function] import_map, else of deno.json or import_map.json in the folder."""
    named = fn.get("import_map")
    files = [folder / named] if isinstance(named, str) else [folder / n for n in IMPORT_MAPS]
    for file in files:
        if not file.is_file():
            if named:
                raise BuildError(f"{folder}: import_map {named} not found")
            continue
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except ValueError as e:
            raise BuildError(f"{file}: not JSON ({e}); deno.jsonc comments are not read, use deno.json") from None
        imports = doc.get("imports", {}) if isinstance(doc, dict) else {}
        if not isinstance(imports, dict) or not all(isinstance(v, str) for v in imports.values()):
            raise BuildError(f'{file}: "imports" must map specifiers to strings')
        return imports, file.parent
    return {}, folder


def _package_json_deps(folder: Path) -> dict[str, str]:
    """The function's own package.json dependencies, if it has one: their ranges win over "latest"."""
    file = folder / "package.json"
    if not file.is_file():
        return {}
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as e:
        raise BuildError(f"{file}: {e}") from None
    return {str(k): str(v) for k, v in doc.get("dependencies", {}).items()}


def _run_bundler(node: str, config: dict[str, Any], tmp: Path, what: str, echo: Echo | None) -> dict[str, Any]:
    cfg_file = tmp / f"{config['mode']}.json"
    report = tmp / f"{config['mode']}-report.json"
    cfg_file.write_text(json.dumps({**config, "report": str(report)}))
    run_tool([node, str(BUNDLER), str(cfg_file)], Path(config["folder"]), what, echo)
    result: dict[str, Any] = json.loads(report.read_text())
    return result


def build(folder: Path, fn: dict[str, Any], echo: Echo | None) -> Path:
    node = _which("node")
    entry = _entry(folder, fn)
    imports, imports_base = _import_map(folder, fn)
    out = folder / OUT_DIR / f"{fn['name']}.js"
    out.parent.mkdir(exist_ok=True)
    out.unlink(missing_ok=True)  # never mistake an old bundle for this build's
    esbuild = install_esbuild(echo)
    base = {
        "esbuild": str(esbuild),
        "folder": str(folder),
        "entry": str(entry),
        "imports": imports,
        "importsBase": str(imports_base),
    }
    with tempfile.TemporaryDirectory(prefix="hive-ts-") as tmp:
        scan = _run_bundler(node, {**base, "mode": "scan"}, Path(tmp), f"reading {entry.name}'s imports", echo)
        packages = {**scan["deps"], **_package_json_deps(folder)}
        deps_dir = install_packages(packages, echo)
        report = _run_bundler(
            node,
            {**base, "mode": "bundle", "depsDir": str(deps_dir), "outFile": str(out)},
            Path(tmp),
            f"bundling {fn['name']}",
            echo,
        )
    if not out.is_file():
        raise BuildError(f"bundling {fn['name']}: esbuild wrote no {out.name}")
    if echo:
        for note in report.get("notes", []):
            echo(f"note: {note}")
        echo(
            f"bundled {entry.name} and {report['inputs'] - 1} more files into {out.name}: {report['bytes']} bytes "
            f"of JavaScript, source map {report['mapBytes']} bytes"
        )
    return out
