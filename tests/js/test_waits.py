"""The deploy-time scan for timers (hive/js/server.py): what sends a JS function's calls to guest threads,
where its timers sleep in the host. A mention anywhere in the bundle counts; the prelude is not scanned."""

from __future__ import annotations

import json
import struct

import pytest

from hive.js.server import BLOB_MAGIC, JsBlob, blob_waits, waits_on_time


@pytest.mark.parametrize(
    "source",
    [
        "await new Promise((r) => setTimeout(r, 10));",
        "const t = setInterval(tick, 1000);",
        "fetch(url, { signal: AbortSignal.timeout(200) });",
        "fetch(url, { signal: AbortSignal?.timeout?.(200) });",
        'const s = AbortSignal["timeout"](5);',
        "EdgeRuntime.waitUntil(work());",
        "var a=globalThis.setTimeout;",  # minified, a library's alias
        "// retries with setTimeout\nDeno.serve(() => new Response('ok'));",  # a comment errs on the safe side
    ],
)
def test_a_timer_mentioned_waits(source: str) -> None:
    assert waits_on_time(source.encode())


@pytest.mark.parametrize(
    "source",
    [
        'Deno.serve(() => new Response("ok"));',
        "const c = new AbortController(); queueMicrotask(() => c.abort());",
        "const x = { timeout: 5 }; AbortSignal.any([]);",
        'const later = globalThis["set" + "Time" + "out"];',  # dynamic: the event loop, polling
    ],
)
def test_no_timer_mentioned_does_not_wait(source: str) -> None:
    assert not waits_on_time(source.encode())


def test_the_decision_is_recorded_in_the_blob() -> None:
    for waits in (True, False):
        blob = JsBlob("e" * 64, b"bc", b"setTimeout(f, 1)", None, waits).pack()
        assert blob_waits(blob) is waits  # the record, not a new scan of the source
        assert JsBlob.unpack(blob).waits is waits


def legacy_blob(source: bytes) -> bytes:
    """A blob as deployed before the record existed: no "waits" in its head."""
    head = json.dumps({"engine": "e" * 64, "bytecode": 2, "source": len(source), "map": -1}).encode()
    return BLOB_MAGIC + struct.pack("<I", len(head)) + head + b"bc" + source


@pytest.mark.parametrize(("source", "waits"), [(b"setTimeout(f, 1)", True), (b"new Response('ok')", False)])
def test_a_blob_deployed_before_the_record_is_scanned_at_load(source: bytes, waits: bool) -> None:
    blob = legacy_blob(source)
    assert blob_waits(blob) is waits
    assert JsBlob.unpack(blob) == JsBlob("e" * 64, b"bc", source, None, waits)
