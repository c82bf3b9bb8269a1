"""Small WAT guests shared by the tests, one behaviour each."""

from __future__ import annotations

import wasmtime


def wat(text: str) -> bytes:
    return bytes(wasmtime.wat2wasm(text))


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

# Returns a constant body; two builds differ only in that body.
def const_wat(body: str, status: int = 200) -> str:
    data = body.encode()
    env = (status.to_bytes(4, "little") + (0).to_bytes(4, "little") + len(data).to_bytes(4, "little") + data)
    escaped = "".join(f"\\{b:02x}" for b in env)
    return f"""
(module
  (memory (export "memory") 1)
  (func (export "hive_abi_v1"))
  (func (export "hive_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "hive_handle") (param i32 i32) (result i64)
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
