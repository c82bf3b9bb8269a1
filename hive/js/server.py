"""JavaScript functions in the server: the worker's engine, a JS version's blob, deploy and load.

A JS version (manifest `kind = "js"`) is deployed as source text: a bundle from `edge-hive function
build`, optionally with its source map inline at the end. Deploy compiles it to bytecode with this
server's engine (never bytecode from a user: QuickJS does not verify it), trial-loads it (a syntax
error or a throwing top level is a 422 with the JS error), and stores one blob holding the bytecode,
the engine it is valid for, the source and the source map. Loading uses the bytecode when the engine
is the same, else compiles the kept source again (after an upgrade of the engine), so a stored version
never depends on the engine that deployed it.

The engine is built from source once per machine (hive/js/engine.py, cached in $HIVE_JS_BUILD_DIR or
<data dir>/js-engine) and compiled by wasmtime once per server (the .cwasm cache); each worker loads
it once, for every JS function. A worker that boots before the engine is built (a new machine, a new
engine version) must not wait for the build (about 35 s, longer than gunicorn lets a worker boot): it
builds in a background thread, its JS functions wait as not loaded, and it loads them when the engine
is there.
"""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from hive.errors import HiveError, InvalidModule
from hive.manifest import Manifest
from hive.registry import VersionRecord
from hive.sandbox import CompiledModule, GuestContext, GuestLimits, Sandbox

from .engine import ENGINE_NAME, ENGINE_WASI_GROUPS, build_engine
from .engine import engine_dir as built_engine_dir
from .instance import BYTECODE_MAGIC, JsFunction, JsLoadError, compile_bundle, load_engine
from .sourcemap import SourceMap, rewriting, split_inline

log = logging.getLogger("hive.js")

BUILD_DIR_ENV = "HIVE_JS_BUILD_DIR"
BLOB_MAGIC = b"\0hive-js-fn\1"
_U32 = struct.Struct("<I")
Sink = Callable[[str, int, str, int, str, str], None]


def engine_dir(data_dir: Path) -> Path:
    """Where this server builds and keeps the engine: $HIVE_JS_BUILD_DIR, else <data dir>/js-engine."""
    env = os.environ.get(BUILD_DIR_ENV)
    return Path(env) if env else data_dir / "js-engine"


# What in a bundle can wait on time: the engine's timers (AbortSignal.timeout and a waitUntil'd promise
# wait on them too). A mention is enough: such a function's calls run on guest threads with their I/O
# context, where the engine sleeps in the host (hive.wait) off the CPU limit; one that reaches a timer
# only dynamically (globalThis["set" + "Timeout"]) runs on the event loop and polls the clock.
_WAITS_ON_TIME = re.compile(rb"setTimeout|setInterval|waitUntil|AbortSignal\W{0,8}timeout")


def waits_on_time(source: bytes) -> bool:
    """Whether the user's bundle (never the engine's prelude) mentions a timer."""
    return _WAITS_ON_TIME.search(source) is not None


@dataclass(frozen=True)
class JsBlob:
    """What a JS version stores: bytecode for one engine, and what rebuilds or explains it."""

    engine_sha256: str
    bytecode: bytes
    source: bytes
    source_map: bytes | None
    waits: bool = False  # waits_on_time(source), decided at deploy: its calls run on guest threads

    def pack(self) -> bytes:
        head = json.dumps(
            {
                "engine": self.engine_sha256,
                "bytecode": len(self.bytecode),
                "source": len(self.source),
                "map": -1 if self.source_map is None else len(self.source_map),
                "waits": self.waits,
            }
        ).encode()
        return b"".join((BLOB_MAGIC, _U32.pack(len(head)), head, self.bytecode, self.source, self.source_map or b""))

    @classmethod
    def unpack(cls, blob: bytes) -> JsBlob:
        head, at = _head(blob)
        parts = []
        for key in ("bytecode", "source", "map"):
            size = head[key]
            parts.append(None if size < 0 else blob[at : at + size])
            at += max(size, 0)
        bytecode, source, smap = parts
        assert bytecode is not None and source is not None
        waits = head["waits"] if "waits" in head else waits_on_time(source)
        return cls(head["engine"], bytecode, source, smap, bool(waits))


def _head(blob: bytes) -> tuple[dict[str, Any], int]:
    """A blob's head and where its parts start."""
    if not blob.startswith(BLOB_MAGIC):
        raise InvalidModule('this version\'s blob is not a JavaScript function (deployed with kind "js"?)')
    at = len(BLOB_MAGIC)
    (n,) = _U32.unpack_from(blob, at)
    at += 4
    head: dict[str, Any] = json.loads(blob[at : at + n])
    return head, at + n


def blob_waits(blob: bytes) -> bool:
    """Whether this version's calls wait on timers (hive.runtime's Loaded.does_io). Recorded at deploy;
    a version deployed before the record existed is scanned now."""
    head, at = _head(blob)
    if "waits" in head:
        return bool(head["waits"])
    at += head["bytecode"]
    return waits_on_time(blob[at : at + head["source"]])


def with_engine_grants(manifest: Manifest) -> Manifest:
    """The engine imports clocks, random, stdio and env whatever a JS manifest says: record that."""
    wasi = list(manifest.wasi) + [g for g in ENGINE_WASI_GROUPS if g not in manifest.wasi]
    return msgspec.structs.replace(manifest, wasi=wasi)


MAX_SOURCE_MAP_BYTES = 16 << 20  # a bigger one is dropped: decoding it would stall a worker


def _parse_map(raw: bytes | None) -> SourceMap | None:
    if raw is None:
        return None
    if len(raw) > MAX_SOURCE_MAP_BYTES:
        log.warning("ignoring a source map of %d bytes (at most %d)", len(raw), MAX_SOURCE_MAP_BYTES)
        return None
    try:
        return SourceMap.from_json(raw)
    except (ValueError, UnicodeDecodeError) as e:
        log.warning("ignoring an unreadable source map: %s", e)
        return None


def check_source(upload: bytes) -> None:
    """Source text only: not a wasm module, not bytecode (QuickJS runs unverified bytecode as given)."""
    if upload.startswith(b"\0asm"):
        raise InvalidModule(
            'this is a WebAssembly module, but the manifest says kind "js": deploy it without '
            "kind, or deploy the function's JavaScript bundle (edge-hive function build)"
        )
    if upload.startswith(BYTECODE_MAGIC) or upload.startswith(BLOB_MAGIC):
        raise InvalidModule(
            "JavaScript functions are deployed as source text, never as bytecode: deploy the "
            "bundle that edge-hive function build writes (<name>.js)"
        )
    try:
        upload.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidModule(f"a JavaScript bundle must be UTF-8 text (byte {e.start} is not)") from None


def _mapped_error(e: JsLoadError, smap: SourceMap | None) -> JsLoadError:
    if smap is None:
        return e
    return JsLoadError(smap.rewrite(e.message), **e.extra)


class EngineBuilding(HiveError):
    code, status = "js_engine_building", 503


class JsEngines:
    """The worker's engine: built (or found built) and loaded once, per fuel flavor, on first use."""

    def __init__(self, sandbox: Sandbox, build_dir: Path, on_ready: Callable[[], None] | None = None) -> None:
        self.sandbox = sandbox
        self.build_dir = build_dir
        self.on_ready = on_ready  # told (on the builder's thread) when a background build is done
        self._lock = threading.Lock()
        self._wasm: Path | None = None
        self._loaded: dict[bool, CompiledModule] = {}
        self._builder: threading.Thread | None = None
        self.build_error: str | None = None

    def _built(self) -> bool:
        return self._wasm is not None or (built_engine_dir(self.build_dir) / ENGINE_NAME).is_file()

    def _build_in_background(self) -> None:
        def build() -> None:
            try:
                build_engine(self.build_dir)
                self.build_error = None
            except Exception as e:  # the functions stay unloaded, and say why
                log.exception("building the JavaScript engine failed")
                self.build_error = str(e)
            if self.on_ready is not None:
                self.on_ready()

        with self._lock:
            if self._builder is None or not self._builder.is_alive():
                log.warning(
                    "the JavaScript engine is not built yet in %s: building it in the background", self.build_dir
                )
                self._builder = threading.Thread(target=build, name="hive-js-engine-build", daemon=True)
                self._builder.start()

    def engine(self, fuel: bool = False, *, wait: bool = True) -> CompiledModule:
        """The engine; with wait=False, an engine that is not built yet starts building in the background
        and this raises EngineBuilding (a worker's load must not block on a build)."""
        have = self._loaded.get(fuel)
        if have is not None:
            return have
        if not wait and not self._built():
            self._build_in_background()
            why = f" (the last build failed: {self.build_error})" if self.build_error else ""
            raise EngineBuilding(
                "the JavaScript engine is being built (once per machine and engine version, "
                f"about 35 s){why}: JavaScript functions load when it is done"
            )
        with self._lock:
            if fuel not in self._loaded:
                if self._wasm is None:
                    self._wasm = build_engine(self.build_dir)
                self._loaded[fuel] = load_engine(self.sandbox, self._wasm, fuel=fuel)
            return self._loaded[fuel]

    def prepare(
        self, name: str, upload: bytes, manifest: Manifest, limits: GuestLimits, env: list[bytes]
    ) -> tuple[bytes, Manifest]:
        """Deploy: the version's blob and its manifest, or a 422 with the JS error. Slow: call in a thread."""
        check_source(upload)
        source, raw_map = split_inline(upload)
        smap = _parse_map(raw_map)
        engine = self.engine(manifest.limits.fuel is not None)
        try:
            bytecode = compile_bundle(self.sandbox, engine, source)
            JsFunction(engine, bytecode).instance(self.sandbox, limits, GuestContext(name, 0, env))
        except JsLoadError as e:
            raise _mapped_error(e, smap) from None
        blob = JsBlob(engine.sha256, bytecode, source, raw_map if smap is not None else None, waits_on_time(source))
        return blob.pack(), with_engine_grants(manifest)

    def function(self, rec: VersionRecord, blob: bytes, sink: Sink | None) -> tuple[CompiledModule, Sink | None]:
        """Load: the CompiledModule a GuestInstance of this version takes, and the guest-output sink that
        points its stack traces at the author's files."""
        js = JsBlob.unpack(blob)
        engine = self.engine(rec.manifest.limits.fuel is not None, wait=False)
        bytecode = js.bytecode
        if js.engine_sha256 != engine.sha256:  # deployed on another engine: its bytecode is not for this one
            log.info("%s v%d was compiled for another JS engine: compiling its source again", rec.name, rec.version)
            bytecode = compile_bundle(self.sandbox, engine, js.source)
        compiled = JsFunction(engine, bytecode).compiled(self.sandbox)
        smap = _parse_map(js.source_map)
        return compiled, (rewriting(sink, smap) if sink is not None and smap is not None else sink)
