"""Only the WebAssembly features docs/security.md lists are enabled (issue 11, item 8): a module that
uses any other proposal is refused at deploy with 422 invalid_module, naming the cause."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hive.errors import InvalidModule
from hive.registry import sha256_hex
from hive.sandbox import GuestContext, GuestInstance, GuestLimits, Sandbox
from tests.guests import guest, wat
from tests.support import Server

# One module per disabled proposal, each otherwise a valid ABI v1 guest, and what wasmtime says.
DISABLED = {
    "gc": (
        "(type $s (struct (field i32))) (func (result i32) (drop (struct.new $s (i32.const 1))) (i32.const 0))",
        "gc",
    ),
    "externref (needs the GC heap)": ("(table 1 externref)", "gc"),
    "exceptions": ("(tag $t) (func (throw $t))", "exceptions"),
    "memory64": ('MEMORY (memory (export "memory") i64 1)', "memory64"),
    "threads (shared memory)": ('MEMORY (memory (export "memory") 1 1 shared)', "thread"),
    "tail calls": ("(func $f (return_call $f))", "tail call"),
    "function references": ("(type $t (func)) (func (param (ref $t)) (call_ref $t (local.get 0)))", "function"),
    "multi-memory": ("(memory $second 1)", "multi"),
    "relaxed SIMD": ("(func (result v128) (i32x4.relaxed_trunc_f32x4_s (v128.const i32x4 0 0 0 0)))", "relaxed"),
    "wide arithmetic": (
        "(func (result i64 i64) (i64.add128 (i64.const 0) (i64.const 0) (i64.const 0) (i64.const 0)))",
        "wide",
    ),
}

ENABLED = {
    "SIMD": "(func (result v128) (v128.const i32x4 1 2 3 4))",
    "bulk memory": "(func (memory.fill (i32.const 0) (i32.const 0) (i32.const 0)))",
    "multi-value": "(func (result i32 i32) (i32.const 1) (i32.const 2))",
    "funcref tables": "(type $v (func)) (table 1 funcref) (func (call_indirect (type $v) (i32.const 0)))",
    "sign extension": "(func (result i32) (i32.extend8_s (i32.const 255)))",
    "non-trapping float-to-int": "(func (result i32) (i32.trunc_sat_f32_s (f32.const 1e30)))",
}


def module_with(field: str) -> bytes:
    """An ABI v1 guest with `field`; a field starting with MEMORY replaces the guest's memory."""
    if not field.startswith("MEMORY "):
        return guest("(i64.const 0)", field)
    return wat(f"""(module {field.removeprefix("MEMORY ")}
        (func (export "hive_abi_v1")) (func (export "hive_alloc") (param i32) (result i32) (i32.const 1024))
        (func (export "hive_handle") (param i32 i32) (result i64) (i64.const 0)))""")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    s = Sandbox(tmp_path / "cache")
    yield s
    s.close()


@pytest.mark.parametrize("field, cause", DISABLED.values(), ids=DISABLED.keys())
def test_a_disabled_proposal_is_refused(sandbox: Sandbox, field: str, cause: str) -> None:
    wasm = module_with(field)
    with pytest.raises(InvalidModule) as e:
        sandbox.compile(wasm, sha256_hex(wasm), frozenset())
    assert (e.value.code, e.value.status) == ("invalid_module", 422)
    assert e.value.message.startswith("the module does not validate: ")
    assert cause in e.value.message.lower()
    assert not list(sandbox.cache_dir.glob("*.cwasm"))


@pytest.mark.parametrize("field", ENABLED.values(), ids=ENABLED.keys())
def test_an_enabled_feature_is_accepted(sandbox: Sandbox, field: str) -> None:
    wasm = guest("(i64.const 0)", field)
    compiled = sandbox.compile(wasm, sha256_hex(wasm), frozenset())
    GuestInstance(sandbox, compiled, GuestLimits(), GuestContext("f"))


def test_the_server_answers_422_for_a_disabled_proposal(server: Server) -> None:
    for name in ("gc", "exceptions", "threads (shared memory)", "tail calls"):
        r = server.deploy("proposal", module_with(DISABLED[name][0]))
        assert r.status_code == 422, (name, r.text)
        assert r.json()["error"] == "invalid_module", (name, r.text)
    with server.client() as c:
        assert c.get("/api/v1/edge/proposal", headers=server.admin).status_code == 404  # nothing was deployed
