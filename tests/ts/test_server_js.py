"""hive/js/server.py with a real engine and Sandbox, no HTTP: a deployed blob loads; one made by another
engine is compiled again from its kept source; stack frames reach the sink mapped."""

from __future__ import annotations

import base64
import dataclasses
import json
from pathlib import Path

import pytest

from hive import abi
from hive.js import default_cache_dir
from hive.js.server import JsBlob, JsEngines
from hive.manifest import Manifest
from hive.registry import VersionRecord
from hive.sandbox import GuestContext, GuestInstance, GuestLimits, Sandbox

pytestmark = pytest.mark.slow

SOURCE = b'Deno.serve((req) => {\n  if (req.method === "POST") throw new Error("mapped");\n  return new Response("ok");\n});\n'
MAP = json.dumps(
    {"version": 3, "sources": ["index.ts"], "names": [], "mappings": "AAAA;AAEA;AAAA"}
).encode()  # line 2 of the bundle is line 3 of index.ts


def test_blobs_load_recompile_for_another_engine_and_map_stacks(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "cache")
    try:
        engines = JsEngines(sandbox, default_cache_dir())
        upload = SOURCE + b"//# sourceMappingURL=data:application/json;base64," + base64.b64encode(MAP) + b"\n"
        blob, manifest = engines.prepare("fn", upload, Manifest(kind="js"), GuestLimits(timeout_ms=1000), [])
        kept = JsBlob.unpack(blob)
        assert kept.source == SOURCE and kept.source_map == MAP and kept.engine_sha256 == engines.engine().sha256
        stale = dataclasses.replace(kept, engine_sha256="0" * 64, bytecode=b"\0hive-qjs-bc\1\1not for this engine")
        for packed in (blob, stale.pack()):  # the second can only serve if its source is compiled again
            lines: list[str] = []
            rec = VersionRecord("fn", 1, "x" * 64, len(packed), 0.0, manifest)
            compiled, sink = engines.function(rec, packed, lambda *a, out=lines: out.append(a[4]))
            inst = GuestInstance(sandbox, compiled, GuestLimits(timeout_ms=1000), GuestContext("fn", sink=sink))
            assert inst.call(abi.encode_request(b"GET", b"/fn", b"", [], b"")).body == b"ok"
            failed = inst.call(abi.encode_request(b"POST", b"/fn", b"", [], b""))
            assert failed.status == 500 and b"mapped" in failed.body
            assert any("(index.ts:3:" in line for line in lines), lines
    finally:
        sandbox.close()
