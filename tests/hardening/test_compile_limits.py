"""Compile bombs (issue 11, item 7): function count and code size are capped before compiling, and the
compile runs in a subprocess bounded in memory (RLIMIT_AS), CPU time (RLIMIT_CPU) and wall time."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hive.errors import InvalidModule
from hive.registry import sha256_hex
from hive.sandbox import Sandbox
from tests.guests import guest
from tests.support import Server


def leb(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def section(section_id: int, payload: bytes) -> bytes:
    return bytes([section_id]) + leb(len(payload)) + payload


def many_functions(count: int, body: bytes = b"\x00\x0b") -> bytes:
    """A module of `count` functions () -> () with the same body (default: no locals, `end`)."""
    types = section(1, leb(1) + b"\x60\x00\x00")
    functions = section(3, leb(count) + b"\x00" * count)
    code = section(10, leb(count) + (leb(len(body)) + body) * count)
    return b"\0asm\x01\0\0\0" + types + functions + code


def heavy_body(ops: int) -> bytes:
    """No locals; `ops` times (i32.const 1, i32.const 2, i32.add, drop); end."""
    return b"\x00" + b"\x41\x01\x41\x02\x6a\x1a" * ops + b"\x0b"


def sandbox_with(tmp_path: Path, **limits: object) -> Sandbox:
    from hive.sandbox.compiler import CompileLimits

    return Sandbox(tmp_path / "cache", compile_limits=CompileLimits(**{**vars(CompileLimits.defaults()), **limits}))


def compile_(sandbox: Sandbox, wasm: bytes) -> None:
    sandbox.compile(wasm, sha256_hex(wasm), frozenset())


def refusal(sandbox: Sandbox, wasm: bytes) -> InvalidModule:
    with pytest.raises(InvalidModule) as e:
        compile_(sandbox, wasm)
    assert (e.value.code, e.value.status) == ("module_too_complex", 422), e.value.message
    assert not list(sandbox.cache_dir.iterdir())  # no artifact, no temp file
    return e.value


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    s = Sandbox(tmp_path / "cache")
    yield s
    s.close()


def test_too_many_functions_are_refused_by_default(sandbox: Sandbox) -> None:
    e = refusal(sandbox, many_functions(60_000))
    assert "60000 functions" in e.message and "max_module_functions (50000)" in e.message
    assert e.extra == {"limit": 50_000, "setting": "max_module_functions"}


def test_the_count_is_checked_before_any_compile(tmp_path: Path) -> None:
    # With 1 MiB of address space no compiler process could even start: the refusal names the count.
    s = sandbox_with(tmp_path, memory_mb=1, max_functions=100)
    try:
        assert refusal(s, many_functions(101)).extra["setting"] == "max_module_functions"
    finally:
        s.close()


def test_too_much_code_is_refused(tmp_path: Path) -> None:
    s = sandbox_with(tmp_path, max_code_bytes=64 * 1024)
    try:
        e = refusal(s, many_functions(100, heavy_body(200)))  # about 120 KB of code
        assert e.extra == {"limit": 64 * 1024, "setting": "max_module_code_bytes"}
        compile_(s, guest("(i64.const 0)"))  # small code is fine
    finally:
        s.close()


def test_a_compile_past_the_memory_limit_is_refused(tmp_path: Path) -> None:
    # A small module compiles in about 60 MiB of address space; 40,000 functions need about 290 MiB.
    s = sandbox_with(tmp_path, memory_mb=160)
    try:
        e = refusal(s, many_functions(40_000))
        assert "compile_memory_mb (160 MiB)" in e.message
        assert e.extra == {"limit": 160, "setting": "compile_memory_mb"}
        compile_(s, guest("(i64.const 0)"))  # the limit leaves room for ordinary modules
    finally:
        s.close()


def test_a_compile_past_the_time_limit_is_refused(tmp_path: Path) -> None:
    s = sandbox_with(tmp_path, timeout_s=1)
    try:
        e = refusal(s, many_functions(20_000, heavy_body(100)))  # several seconds of CPU to compile
        assert "compile_timeout_s (1 s)" in e.message
        assert e.extra == {"limit": 1, "setting": "compile_timeout_s"}
    finally:
        s.close()


def test_the_server_refuses_a_compile_bomb_with_422(server: Server) -> None:
    r = server.deploy("bomb", many_functions(300_000))
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "module_too_complex" and body["setting"] == "max_module_functions"
    assert "raise the server setting max_module_functions" in body["message"]
    with server.client() as c:
        assert c.get("/api/v1/edge/bomb/versions", headers=server.admin).status_code == 404
