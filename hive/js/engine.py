"""Build the JavaScript engine guest: QuickJS-ng from its PyPI sdist plus hive/js's glue, compiled to
one wasm32-wasi reactor with the pip `ziglang` toolchain.

The engine is built once per (QuickJS-ng version, glue sources, zig version) and cached under
`cache_dir`; wasmtime then compiles it once per server like any module (the `.cwasm` cache). A
function's code is never compiled into it: it is data loaded into each instance (hive/js/instance.py).
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata
import os
import shutil
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hive.build import Echo, listed, run_tool
from hive.errors import BuildError, HiveError

# The `quickjs-ng` sdist on PyPI (Python bindings) carries QuickJS-ng's C sources in upstream-quickjs/.
QUICKJS_SDIST_VERSION = "0.17.0.2"  # QuickJS-ng 0.17.0
QUICKJS_SDIST_SHA256 = "43d2e48272208721a7aaea8e3f02d4b9318f12ef20cc4f5421b59d9a470706ef"
QUICKJS_SDIST = f"quickjs_ng-{QUICKJS_SDIST_VERSION}.tar.gz"
QUICKJS_C = ("quickjs.c", "libregexp.c", "libunicode.c", "dtoa.c")
# A local copy of the sdist, for building without the registry.
SDIST_ENV = "HIVE_QUICKJS_SDIST"

HERE = Path(__file__).resolve().parent
GLUE_C = ("glue.c", "hcrypto.c")
GLUE_FILES = (*GLUE_C, "hcrypto.h")
PRELUDE_DIR = HERE / "prelude"
ENGINE_NAME = "hive-js.wasm"

# The linear-memory (shadow) stack, placed first so that overflowing it traps; glue.c's JS limit is
# well below it (the native stack is the tighter bound, see HIVE_JS_STACK_LIMIT there).
STACK_BYTES = 512 << 10
CFLAGS = (
    "-target",
    "wasm32-wasi",
    "-Oz",
    "-mexec-model=reactor",
    "-s",
    "-D_GNU_SOURCE",
    "-DNDEBUG",
    f"-DHIVE_STACK_BYTES={STACK_BYTES}",
    f"-Wl,-z,stack-size={STACK_BYTES}",
)
# The WASI groups (hive.manifest.WASI_GROUPS) the engine imports from: a JS function needs them granted.
ENGINE_WASI_GROUPS = ("clocks", "random", "stdio", "env")
ENGINE_EXPORTS = frozenset(
    {
        "memory",
        "hive_abi_v1",
        "hive_alloc",
        "hive_free",
        "hive_handle",
        "_initialize",
        "hive_js_load",
        "hive_js_last_error",
        "hive_js_compile",
    }
)


def zig_version() -> str:
    try:
        return importlib.metadata.version("ziglang")
    except importlib.metadata.PackageNotFoundError:
        raise BuildError(
            f"the JS engine is compiled with the pip `ziglang` toolchain: install it into {sys.executable}"
        ) from None


def prelude_files() -> list[Path]:
    return sorted(PRELUDE_DIR.glob("*.js"))


def prelude_source() -> bytes:
    """The prelude files as one factory function, (function (native) { ... }), evaluated once per instance."""
    parts = [b'(function (native) {\n"use strict";\n']
    for f in prelude_files():
        parts += [f"// ---- {f.name} ----\n".encode(), f.read_bytes(), b"\n"]
    parts.append(b"})\n")
    return b"".join(parts)


def engine_key() -> str:
    """What the built engine depends on: a change to any of it is a new engine."""
    h = hashlib.sha256()
    for part in (QUICKJS_SDIST_VERSION, QUICKJS_SDIST_SHA256, zig_version(), " ".join(CFLAGS)):
        h.update(part.encode() + b"\0")
    for name in (*GLUE_FILES, "engine.py"):  # engine.py: the recipe is part of the engine
        h.update(name.encode() + b"\0" + (HERE / name).read_bytes() + b"\0")
    h.update(prelude_source())
    return h.hexdigest()[:16]


def engine_dir(cache_dir: str | Path) -> Path:
    return Path(cache_dir) / f"engine-qjs{QUICKJS_SDIST_VERSION}-zig{zig_version()}-{engine_key()}"


@contextmanager
def _locked(cache_dir: Path) -> Iterator[None]:
    """One builder at a time per cache dir (workers, test sessions); the others wait and reuse."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_sdist(cache_dir: Path, echo: Echo | None = None) -> Path:
    """The pinned quickjs-ng sdist, checked against its hash: from $HIVE_QUICKJS_SDIST, the cache, or PyPI
    through pip."""
    target = cache_dir / "sdist" / QUICKJS_SDIST
    local = os.environ.get(SDIST_ENV)
    candidates = [Path(local)] if local else []
    candidates.append(target)
    for path in candidates:
        if path.is_file():
            if _sha256(path) != QUICKJS_SDIST_SHA256:
                raise BuildError(
                    f"{path} is not the pinned {QUICKJS_SDIST} (sha256 differs): delete it or point {SDIST_ENV} at the right file"
                )
            return path
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--no-binary",
            ":all:",
            "--disable-pip-version-check",
            "-d",
            tmp,
            f"quickjs-ng=={QUICKJS_SDIST_VERSION}",
        ]
        try:
            run_tool(cmd, target.parent, f"downloading quickjs-ng {QUICKJS_SDIST_VERSION}", echo)
        except BuildError as e:
            raise BuildError(
                f"{e.message}\nWithout PyPI, download {QUICKJS_SDIST} elsewhere and set {SDIST_ENV} to its path"
            ) from None
        got = Path(tmp) / QUICKJS_SDIST
        if not got.is_file() or _sha256(got) != QUICKJS_SDIST_SHA256:
            raise BuildError(f"pip did not deliver the pinned {QUICKJS_SDIST} (missing or wrong sha256)")
        os.replace(got, target)
    return target


def _extract(sdist: Path, dest: Path) -> Path:
    """upstream-quickjs/ (sources, headers, LICENSE) from the sdist into dest."""
    prefix = f"quickjs_ng-{QUICKJS_SDIST_VERSION}/"
    with tarfile.open(sdist) as tar:
        for member in tar.getmembers():
            name = member.name
            if not name.startswith(prefix) or not member.isfile():
                continue
            rel = name[len(prefix) :]
            if not (rel.startswith("upstream-quickjs/") or rel == "LICENSE") or ".." in rel.split("/"):
                continue
            out = dest / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            src = tar.extractfile(member)
            assert src is not None
            out.write_bytes(src.read())
    qjs = dest / "upstream-quickjs"
    missing = [c for c in (*QUICKJS_C, "quickjs.h") if not (qjs / c).is_file()]
    if missing:
        raise BuildError(f"{sdist.name} lacks {listed(missing)}: not the sdist this build expects")
    return qjs


def _sources(cache: Path, sdist: Path) -> Path:
    """QuickJS-ng's sources, extracted once per cache: a fixed path lets zig's cache reuse their objects."""
    dest = cache / f"quickjs-ng-{QUICKJS_SDIST_VERSION}"
    done = dest / ".extracted"
    if not done.is_file():
        shutil.rmtree(dest, ignore_errors=True)
        _extract(sdist, dest)
        done.write_text(QUICKJS_SDIST_SHA256)
    return dest / "upstream-quickjs"


def _prelude_header(data: bytes, bytecode: bool) -> str:
    body = ",".join(str(b) for b in data)
    return (
        "/* generated by hive/js/engine.py from the files of hive/js/prelude */\n"
        f"#define HIVE_PRELUDE_IS_BYTECODE {int(bytecode)}\n"
        f"static const unsigned char HIVE_PRELUDE[{len(data) + 1}] = {{{body},0}};\n"
        f"#define HIVE_PRELUDE_LEN {len(data)}\n"
    )


def _compile(qjs: Path, gen: Path, out: Path, echo: Echo | None, what: str) -> None:
    cmd = [
        sys.executable,
        "-m",
        "ziglang",
        "cc",
        *CFLAGS,
        "-I",
        str(qjs),
        "-I",
        str(gen),
        "-I",
        str(HERE),
        "-o",
        str(out),
        *(str(HERE / c) for c in GLUE_C),
        *(str(qjs / c) for c in QUICKJS_C),
    ]
    run_tool(cmd, out.parent, what, echo)


def build_engine(cache_dir: str | Path, *, echo: Echo | None = None) -> Path:
    """The engine module for the current sources, built if this cache lacks it.

    Two compiles: the first engine carries the prelude as source and compiles it to QuickJS bytecode,
    which the second embeds, so that no instance parses the prelude. The second compile reuses zig's
    objects of the QuickJS sources (same paths and flags), so it takes seconds.
    """
    cache = Path(cache_dir)
    out_dir = engine_dir(cache)
    out = out_dir / ENGINE_NAME
    if out.is_file():
        return out
    with _locked(cache):
        if out.is_file():  # built while this process waited for the lock
            return out
        started = time.monotonic()
        qjs = _sources(cache, fetch_sdist(cache, echo))
        with tempfile.TemporaryDirectory(dir=cache, prefix=".build-") as tmp:
            work = Path(tmp)
            gen = work / "gen"
            gen.mkdir()
            header = gen / "prelude_js.h"
            stage1 = work / "stage1.wasm"
            header.write_text(_prelude_header(prelude_source(), bytecode=False))
            _compile(qjs, gen, stage1, echo, "compiling the JavaScript engine (QuickJS-ng)")
            header.write_text(_prelude_header(compile_prelude(stage1), bytecode=True))
            built = work / ENGINE_NAME
            _compile(qjs, gen, built, echo, "compiling the JavaScript engine with its prelude as bytecode")
            check_engine(built)
            if echo:
                echo(f"built {ENGINE_NAME}: {built.stat().st_size} bytes in {time.monotonic() - started:.1f} s")
            out_dir.mkdir(parents=True, exist_ok=True)
            if (qjs.parent / "LICENSE").is_file():  # the sdist's licence travels with the binary
                shutil.copyfile(qjs.parent / "LICENSE", out_dir / "LICENSE.quickjs-ng")
            os.replace(built, out)
    return out


COMPILE_SCRIPT, COMPILE_STRIP = 1, 2  # hive_js_compile's flags (glue.c)


def compile_prelude(stage1: Path) -> bytes:
    """The prelude as bytecode, compiled by the first-stage engine itself (the same QuickJS build, so
    the bytecode is what the final engine reads)."""
    from wasmtime import Config, Engine, Func, Linker, Memory, Module

    from hive.sandbox import host

    cfg = Config()
    cfg.parallel_compilation = False  # no compiler threads in a process that may fork later
    cfg.cranelift_opt_level = "none"  # it runs once: compile fast
    engine = Engine(cfg)
    linker = Linker(engine)
    host.define_all(linker)
    store = host.new_store(engine)
    try:
        previous: host.GuestContext | None = host.current()
    except AttributeError:  # no guest has run on this thread yet
        previous = None
    host.set_current(host.GuestContext("js-engine-build"))
    try:
        exports = linker.instantiate(store, Module.from_file(engine, str(stage1))).exports(store)
        init, alloc, compile_, last_error = (
            exports[n] for n in ("_initialize", "hive_alloc", "hive_js_compile", "hive_js_last_error")
        )
        memory = exports["memory"]
        assert isinstance(init, Func) and isinstance(alloc, Func) and isinstance(compile_, Func)
        assert isinstance(last_error, Func) and isinstance(memory, Memory)
        init(store)
        src = prelude_source()
        ptr = alloc(store, len(src))
        memory.write(store, src, ptr)
        packed = compile_(store, ptr, len(src), COMPILE_SCRIPT | COMPILE_STRIP) & 0xFFFF_FFFF_FFFF_FFFF
        if not packed:
            err = last_error(store) & 0xFFFF_FFFF_FFFF_FFFF
            text = bytes(memory.read(store, err >> 32, (err >> 32) + (err & 0xFFFF_FFFF))).decode("utf-8", "replace")
            raise BuildError(f"the JS prelude does not compile: {text}")
        p, n = packed >> 32, packed & 0xFFFF_FFFF
        return bytes(memory.read(store, p, p + n))
    finally:
        host.set_current(previous)


def check_engine(path: Path) -> None:
    """The engine passes the deploy's module check (every WASI group granted) and exports hive_js_*."""
    from hive.sandbox import inspect  # wasmtime, only once the compiler has produced a module

    try:
        module = inspect.compile_module(inspect.build_engine(), path.read_bytes())
        bad = inspect.unknown_imports(module)
        if bad:
            raise BuildError(f"the JS engine imports {listed(bad)}, which Edge Hive does not provide")
        inspect.check_interface(module, inspect.ALL_WASI)
    except BuildError:
        raise
    except HiveError as e:
        raise BuildError(f"the JS engine is not a valid guest: {e.message}") from None
    missing = sorted(ENGINE_EXPORTS - {e.name for e in module.exports})
    if missing:
        raise BuildError(f"the JS engine does not export {listed(missing)}")


def default_cache_dir() -> Path:
    """Where tests and tools keep built engines: $HIVE_JS_BUILD_DIR or build/js-engine in the checkout."""
    env = os.environ.get("HIVE_JS_BUILD_DIR")
    return Path(env) if env else HERE.parent.parent / "build" / "js-engine"
