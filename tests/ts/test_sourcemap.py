"""hive/js/sourcemap.py and hive/js/server.py's blob, as plain code: VLQ decoding, lookups, frame rewriting,
the inline map split, and the version blob's round trip."""

from __future__ import annotations

import base64
import json

import pytest

from hive.errors import InvalidModule
from hive.js.server import JsBlob, check_source, with_engine_grants
from hive.js.sourcemap import SourceMap, rewriting, split_inline
from hive.manifest import Manifest

_B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def vlq(*nums: int) -> str:
    """The reference encoder (source map v3): sign in the low bit, 5 bits per digit, continuation bit 32."""
    out = []
    for n in nums:
        v = (-n << 1) | 1 if n < 0 else n << 1
        while True:
            digit, v = v & 31, v >> 5
            out.append(_B64[digit | (32 if v else 0)])
            if not v:
                break
    return "".join(out)


def smap(lines: list[list[tuple[int, ...]]], sources: list[str]) -> SourceMap:
    """A map from absolute (gen col, src, line, col) segments per generated line, encoded as deltas."""
    prev = [0, 0, 0]
    text = []
    for segs in lines:
        col = 0
        parts = []
        for seg in segs:
            if len(seg) == 1:
                parts.append(vlq(seg[0] - col))
            else:
                parts.append(vlq(seg[0] - col, seg[1] - prev[0], seg[2] - prev[1], seg[3] - prev[2]))
                prev = list(seg[1:4])
            col = seg[0]
        text.append(",".join(parts))
    return SourceMap({"version": 3, "sources": sources, "names": [], "mappings": ";".join(text)})


def test_vlq_round_trips_through_lookups() -> None:
    m = smap(
        [[(0, 0, 0, 0)], [], [(2, 1, 40, 7), (30, 1, 41, 0), (31,)], [(4, 0, 1000, 123456)]],
        ["index.ts", "../_shared/cors.ts"],
    )
    assert m.lookup(1, 1) == ("index.ts", 1, 1)
    assert m.lookup(2, 5) is None  # a line with no mapping
    assert m.lookup(3, 3) == ("../_shared/cors.ts", 41, 8)
    assert m.lookup(3, 30) == ("../_shared/cors.ts", 41, 8)  # up to the next segment
    assert m.lookup(3, 31) == ("../_shared/cors.ts", 42, 1)
    assert m.lookup(3, 40) == ("../_shared/cors.ts", 42, 1)  # a 1-field segment maps nothing new
    assert m.lookup(3, 1) == ("../_shared/cors.ts", 41, 8)  # before the first segment: the line's first
    assert m.lookup(4, 5) == ("index.ts", 1001, 123457)  # large and multi-digit values
    assert m.lookup(99, 1) is None and m.lookup(0, 1) is None


@pytest.mark.parametrize("n", [0, 1, -1, 15, 16, -16, 31, 32, 1023, -1024, 123456789])
def test_vlq_values(n: int) -> None:
    m = smap([[(0, 0, abs(n), 0)]], ["a.ts"])
    assert m.lookup(1, 1) == ("a.ts", abs(n) + 1, 1)


def test_frames_are_rewritten_and_others_kept() -> None:
    m = smap([[(0, 0, 0, 0)], [(10, 0, 7, 4)]], ["index.ts"])
    text = "Error: x\n    at checkedTotal (function.js:2:15)\n    at <anonymous> (function.js:50:1)\n    at native"
    assert m.rewrite(text) == (
        "Error: x\n    at checkedTotal (index.ts:8:5)\n    at <anonymous> (function.js:50:1)\n    at native"
    )
    assert m.rewrite("no frames here") == "no frames here"


def test_bad_maps_are_refused() -> None:
    for doc in ({"version": 2, "sources": [], "mappings": ""}, {"version": 3, "mappings": ""}, [1, 2]):
        with pytest.raises(ValueError):
            SourceMap.from_json(json.dumps(doc))


def test_a_broken_map_never_breaks_logging() -> None:
    lines: list[str] = []
    m = SourceMap({"version": 3, "sources": ["index.ts"], "mappings": "A!!A;AAAA,%%;AAjjjjjjj"})
    sink = rewriting(lambda *a: lines.append(a[4]), m)
    for frame in (
        "at f (function.js:1:1)",
        "at g (function.js:2:5)",
        "at h (function.js:3:1)",
        "at i (function.js:9:9)",
    ):
        sink("fn", 1, "stderr", 40, frame, "")
    assert len(lines) == 4 and all("(" in line for line in lines)


def test_the_inline_map_is_split_off() -> None:
    doc = b'{"version":3,"sources":["index.ts"],"mappings":"AAAA"}'
    code = b'Deno.serve(() => new Response("x"));\n'
    source, raw = split_inline(
        code + b"//# sourceMappingURL=data:application/json;base64," + base64.b64encode(doc) + b"\n"
    )
    assert source == code and raw == doc
    assert split_inline(code) == (code, None)
    assert split_inline(code + b"//# sourceMappingURL=other.js.map\n")[1] is None


def test_the_blob_round_trips_and_sources_are_checked() -> None:
    blob = JsBlob("e" * 64, b"\0hive-qjs-bc\1\1bytecode", b"source", b'{"version":3}')
    assert JsBlob.unpack(blob.pack()) == blob
    no_map = JsBlob("e" * 64, b"bc", b"src", None)
    assert JsBlob.unpack(no_map.pack()) == no_map
    with pytest.raises(InvalidModule):
        JsBlob.unpack(b"\0asm\1\0\0\0")
    for upload in (b"\0asm\1\0\0\0", b"\0hive-qjs-bc\1\1xx", blob.pack(), b"\xff\xfe"):
        with pytest.raises(InvalidModule):
            check_source(upload)
    check_source("Deno.serve(() => new Response('é'))".encode())
    assert with_engine_grants(Manifest(wasi=["clocks"])).wasi == ["clocks", "random", "stdio", "env"]
