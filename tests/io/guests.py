"""WAT guests that drive the I/O host calls (docs/abi.md, "Host calls for I/O") with records the test
sends as the request body, and answer the raw result records: the test decodes them with hive.hostio's
layout. Plus record builders and a result reader for the tests."""

from __future__ import annotations

import struct

from hive import abi
from tests.guests import wat

IMPORTS = """
  (import "hive" "fetch_send" (func $send (param i32 i32) (result i32)))
  (import "hive" "fetch_wait" (func $wait (param i32) (result i64)))
  (import "hive" "kv" (func $kv (param i32 i32) (result i64)))
  (import "hive" "result_read" (func $read (param i32 i32 i32) (result i32)))
"""

# The response is built at OUT: status, 0 headers, body length, then the body (result records).
OUT = 0x4_0000

# Locate the request body: skip method, path, query and the headers of the envelope at $p.
BODY = """
  (func $skip (param $p i32) (result i32)
    (i32.add (i32.add (local.get $p) (i32.const 4)) (i32.load (local.get $p))))
  (func $body (param $p i32) (result i32)
    (local $n i32)
    (local.set $p (call $skip (call $skip (call $skip (local.get $p)))))
    (local.set $n (i32.load (local.get $p)))
    (local.set $p (i32.add (local.get $p) (i32.const 4)))
    (block $done (loop $next
      (br_if $done (i32.eqz (local.get $n)))
      (local.set $p (call $skip (call $skip (local.get $p))))
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $next)))
    (local.get $p))
  ;; append the result of a packed (handle << 32 | len) at $at; returns the new end
  (func $take (param $packed i64) (param $at i32) (result i32)
    (local $len i32)
    (if (i64.lt_s (local.get $packed) (i64.const 0))
      (then (i32.store (local.get $at) (i32.const -1)) (return (i32.add (local.get $at) (i32.const 4)))))
    (local.set $len (i32.wrap_i64 (local.get $packed)))
    (i32.store (local.get $at) (local.get $len))
    (drop (call $read (i32.wrap_i64 (i64.shr_u (local.get $packed) (i64.const 32)))
                      (i32.add (local.get $at) (i32.const 4)) (local.get $len)))
    (i32.add (i32.add (local.get $at) (i32.const 4)) (local.get $len)))
"""

RESPOND = f"""
  (func $respond (param $end i32) (result i64)
    (i32.store (i32.const {OUT}) (i32.const 200))
    (i32.store (i32.const {OUT + 4}) (i32.const 0))
    (i32.store (i32.const {OUT + 8}) (i32.sub (local.get $end) (i32.const {OUT + 12})))
    (i64.or (i64.shl (i64.const {OUT}) (i64.const 32))
            (i64.extend_i32_u (i32.sub (local.get $end) (i32.const {OUT})))))
"""

# The body is one or more records, each: u32 kind (0 fetch, 1 kv), u32 count (repeat it), u32 len, record.
# Fetches are all sent first, then waited for in order (so they run concurrently); KV calls run in place.
HANDLE = """
  (func (export "hive_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $p i32) (local $end i32) (local $out i32) (local $kind i32) (local $count i32) (local $rlen i32)
    (local $h i32) (local $hs i32) (local $hn i32) (local $i i32)
    (local.set $p (call $body (local.get $ptr)))
    (local.set $end (i32.add (i32.add (local.get $p) (i32.const 4)) (i32.load (local.get $p))))
    (local.set $p (i32.add (local.get $p) (i32.const 4)))
    (local.set $out (i32.const OUT12))
    (local.set $hs (i32.const 0x3_0000))  ;; handles of sent fetches
    (local.set $hn (i32.const 0))
    (block $done (loop $next
      (br_if $done (i32.ge_u (local.get $p) (local.get $end)))
      (local.set $kind (i32.load (local.get $p)))
      (local.set $count (i32.load offset=4 (local.get $p)))
      (local.set $rlen (i32.load offset=8 (local.get $p)))
      (local.set $p (i32.add (local.get $p) (i32.const 12)))
      (block $rep_done (loop $rep
        (br_if $rep_done (i32.eqz (local.get $count)))
        (if (i32.eqz (local.get $kind))
          (then
            (local.set $h (call $send (local.get $p) (local.get $rlen)))
            (i32.store (i32.add (local.get $hs) (i32.shl (local.get $hn) (i32.const 2))) (local.get $h))
            (local.set $hn (i32.add (local.get $hn) (i32.const 1))))
          (else
            (local.set $out (call $take (call $kv (local.get $p) (local.get $rlen)) (local.get $out)))))
        (local.set $count (i32.sub (local.get $count) (i32.const 1)))
        (br $rep)))
      (local.set $p (i32.add (local.get $p) (local.get $rlen)))
      (br $next)))
    (local.set $i (i32.const 0))
    (block $w_done (loop $w
      (br_if $w_done (i32.ge_u (local.get $i) (local.get $hn)))
      (local.set $h (i32.load (i32.add (local.get $hs) (i32.shl (local.get $i) (i32.const 2)))))
      (if (i32.lt_s (local.get $h) (i32.const 0))
        (then (i32.store (local.get $out) (i32.const -2)) (local.set $out (i32.add (local.get $out) (i32.const 4))))
        (else (local.set $out (call $take (call $wait (local.get $h)) (local.get $out)))))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $w)))
    (call $respond (local.get $out)))
""".replace("OUT12", str(OUT + 12))

ALLOC = """
  (global $heap (mut i32) (i32.const 0x28_0000))
  (func (export "hive_alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (i32.and (i32.add (local.get $n) (i32.const 7)) (i32.const -8))))
    (local.get $p))
"""


def io_guest(pages: int = 48) -> bytes:
    """Runs the records in its request body (see HANDLE); 48 pages = 3 MiB of memory: results up to
    2.25 MiB, a request body up to 0.5 MiB."""
    return wat(f"""(module {IMPORTS}
  (memory (export "memory") {pages})
  (func (export "hive_abi_v1"))
  {ALLOC} {BODY} {RESPOND} {HANDLE})""")


SPAM = f"""(module {IMPORTS}
  (memory (export "memory") 2)
  (func (export "hive_abi_v1"))
  (func (export "hive_alloc") (param i32) (result i32) (i32.const 1024))
  (data (i32.const 64) "\\01\\00\\00\\00\\07\\00\\00\\00default\\01\\00\\00\\00k")
  (func (export "hive_handle") (param i32 i32) (result i64)
    (loop $again
      (drop (call $kv (i32.const 64) (i32.const 20)))
      (drop (call $send (i32.const 64) (i32.const 20)))
      (br $again))
    (i64.const 0)))
"""


# --- records ---


def _f(b: bytes) -> bytes:
    return struct.pack("<I", len(b)) + b


def fetch(url: str, method: str = "GET", headers: list[tuple[str, str]] | None = None, body: bytes = b"") -> bytes:
    hs = headers or []
    return (
        _f(method.encode())
        + _f(url.encode())
        + struct.pack("<I", len(hs))
        + b"".join(_f(k.encode()) + _f(v.encode()) for k, v in hs)
        + _f(body)
    )


def kv(
    op: str,
    store: str,
    key: bytes,
    value: bytes = b"",
    ttl_ms: int = 0,
    cursor: bytes = b"",
    limit: int = 100,
    delta: int = 1,
) -> bytes:
    code = {"get": 1, "set": 2, "delete": 3, "list": 4, "incr": 5}[op]
    rec = struct.pack("<I", code) + _f(store.encode()) + _f(key)
    if op == "set":
        rec += _f(value) + struct.pack("<Q", ttl_ms)
    elif op == "list":
        rec += _f(cursor) + struct.pack("<I", limit)
    elif op == "incr":
        rec += struct.pack("<qQ", delta, ttl_ms)
    return rec


def program(*steps: tuple[str, bytes] | tuple[str, bytes, int]) -> bytes:
    """The request body: ("fetch", record[, times]) or ("kv", record[, times]) steps."""
    out = b""
    for step in steps:
        kind, rec = step[0], step[1]
        times = step[2] if len(step) > 2 else 1  # type: ignore[misc]
        out += struct.pack("<III", 0 if kind == "fetch" else 1, times, len(rec)) + rec
    return out


# --- results ---


class Result:
    def __init__(self, raw: bytes) -> None:
        (self.kind,) = struct.unpack_from("<I", raw)
        self.raw = raw[4:]
        if self.kind == 1:
            r = abi.Reader(self.raw)
            self.code, self.message = r.bytes("code").decode(), r.bytes("message").decode()
        else:
            self.code = self.message = None  # type: ignore[assignment]

    def response(self) -> abi.Response:
        assert self.kind == 0, (self.code, self.message)
        return abi.decode_response(self.raw, 1 << 30)

    def kv_get(self) -> bytes | None:
        assert self.kind == 0, (self.code, self.message)
        found, n = struct.unpack_from("<II", self.raw)
        return self.raw[8 : 8 + n] if found else None

    def kv_keys(self) -> tuple[list[bytes], bytes]:
        assert self.kind == 0, (self.code, self.message)
        r = abi.Reader(self.raw)
        keys = [r.bytes("key") for _ in range(r.u32("count"))]
        return keys, r.bytes("cursor")

    def kv_number(self) -> int:
        assert self.kind == 0, (self.code, self.message)
        return int(struct.unpack_from("<q", self.raw)[0])


def results(body: bytes) -> list[Result | int]:
    """The guest's answers in order: a Result, or -1 (-2) when the host call returned -1 (no handle)."""
    out: list[Result | int] = []
    pos = 0
    while pos < len(body):
        (n,) = struct.unpack_from("<i", body, pos)
        pos += 4
        if n < 0:
            out.append(n)
            continue
        out.append(Result(body[pos : pos + n]))
        pos += n
    return out
