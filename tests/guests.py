"""Small WAT guests shared by the tests, one behaviour each, and helpers to build such guests."""

from __future__ import annotations

import wasmtime


def wat(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


# --- building a guest around the body of its hive_handle ---

WASI = "wasi_snapshot_preview1"
RESP = 8192  # where the guests built with these helpers put their response envelope


def data(addr: int, raw: bytes) -> str:
    escaped = "".join(f"\\{b:02x}" for b in raw)
    return f'(data (i32.const {addr}) "{escaped}")'


def packed(ptr: int, length: int) -> str:
    """A WAT i64 constant for hive_handle's (ptr << 32) | len (signed, as WAT wants it)."""
    value = (ptr << 32) | length
    return f"(i64.const {value - (1 << 64) if value >= 1 << 63 else value})"


def guest(handle: str, *fields: str, alloc: str = "(i32.const 1024)", pages: int = 1) -> bytes:
    """An ABI v1 module; `handle` is the body of hive_handle (param $ptr i32) (param $len i32) (result i64).
    Fields starting with "(import" go first, as wasm wants."""
    imports = " ".join(f for f in fields if f.startswith("(import"))
    rest = " ".join(f for f in fields if not f.startswith("(import"))
    return wat(f"""
(module
  {imports}
  (memory (export "memory") {pages})
  (func (export "hive_abi_v1"))
  (func (export "hive_alloc") (param $n i32) (result i32) {alloc})
  (func (export "hive_handle") (param $ptr i32) (param $len i32) (result i64) {handle})
  {rest})
""")


def growing_alloc(gap: int = 0) -> str:
    """WAT for a bump allocator from 1024 (global $heap) and the hive_alloc on it, which grows memory as
    needed (0 when it can't) and keeps `gap` bytes free in front of each block."""
    start = f"(i32.add (global.get $heap) (i32.const {gap}))" if gap else "(global.get $heap)"
    return f"""(global $heap (mut i32) (i32.const 1024))
  (func (export "hive_alloc") (param $n i32) (result i32)
    (local $p i32) (local $end i32)
    (local.set $p {start})
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (if (i32.gt_u (local.get $end) (i32.mul (memory.size) (i32.const 65536)))
      (then
        (if (i32.eq (memory.grow (i32.sub (i32.add (i32.shr_u (local.get $end) (i32.const 16)) (i32.const 1))
                                          (memory.size)))
                    (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (local.get $end))
    (local.get $p))"""


def echo_guest(gap: int) -> bytes:
    """Echoes the request envelope as the response body without copying: hive_alloc keeps `gap` bytes
    (at least 12) in front of each block, and hive_handle writes the response header just before it."""
    return wat(f"""
(module
  (memory (export "memory") 1)
  (func (export "hive_abi_v1"))
  {growing_alloc(gap)}
  (func (export "hive_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $r i32)
    (local.set $r (i32.sub (local.get $ptr) (i32.const 12)))
    (i32.store (local.get $r) (i32.const 200))
    (i32.store offset=4 (local.get $r) (i32.const 0))
    (i32.store offset=8 (local.get $r) (local.get $len))
    (i64.or (i64.shl (i64.extend_i32_u (local.get $r)) (i64.const 32))
            (i64.extend_i32_u (i32.add (local.get $len) (i32.const 12))))))
""")


# --- whole guests ---


# An ABI v1 guest that echoes the request envelope back as the response body, with status 200.
ECHO_WAT = r"""
(module
  (memory (export "memory") 2)
  (global $bump (mut i32) (i32.const 1024))
  (func (export "hive_abi_v1"))
  (func (export "hive_alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $bump))
    (global.set $bump (i32.add (global.get $bump) (local.get $n)))
    (local.get $p))
  (func (export "hive_handle") (param $p i32) (param $n i32) (result i64)
    (i32.store (i32.const 65536) (i32.const 200))
    (i32.store (i32.const 65540) (i32.const 1))
    (i32.store (i32.const 65544) (i32.const 1))
    (i32.store8 (i32.const 65548) (i32.const 120))   ;; header "x" ...
    (i32.store (i32.const 65549) (i32.const 1))
    (i32.store8 (i32.const 65553) (i32.const 49))    ;; ... = "1"
    (i32.store (i32.const 65554) (local.get $n))
    (memory.copy (i32.const 65558) (local.get $p) (local.get $n))
    (i64.or (i64.shl (i64.const 65536) (i64.const 32))
            (i64.extend_i32_u (i32.add (local.get $n) (i32.const 22))))))
"""


# Returns a constant body; two builds differ only in that body. `work` is WAT that hive_handle runs first.
def const_wat(body: str, status: int = 200, work: str = "") -> str:
    data = body.encode()
    env = status.to_bytes(4, "little") + (0).to_bytes(4, "little") + len(data).to_bytes(4, "little") + data
    escaped = "".join(f"\\{b:02x}" for b in env)
    return f"""
(module
  (memory (export "memory") 1)
  (func (export "hive_abi_v1"))
  (func (export "hive_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "hive_handle") (param i32 i32) (result i64)
    {work}
    (i64.or (i64.shl (i64.const 1024) (i64.const 32)) (i64.const {len(env)})))
  (data (i32.const 1024) "{escaped}"))
"""


LOOP_WAT = r"""
(module
  (memory (export "memory") 1)
  (func (export "hive_abi_v1"))
  (func (export "hive_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "hive_handle") (param i32 i32) (result i64)
    (loop $l (br $l))
    (i64.const 0)))
"""

TRAP_WAT = r"""
(module
  (memory (export "memory") 1)
  (func (export "hive_abi_v1"))
  (func (export "hive_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "hive_handle") (param i32 i32) (result i64) unreachable))
"""

OOB_WAT = r"""
(module
  (memory (export "memory") 1)
  (func (export "hive_abi_v1"))
  (func (export "hive_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "hive_handle") (param i32 i32) (result i64)
    (i64.const 0x7fff000000000010)))
"""

FORBIDDEN_WAT = r"""
(module
  (import "env" "system" (func (param i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "hive_abi_v1"))
  (func (export "hive_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "hive_handle") (param i32 i32) (result i64) (i64.const 0)))
"""
