"""The wasmtime sandbox: one small WAT guest per behaviour, each with its expected error.

Guest memory layout used by most guests here: hive_alloc hands out 1024 (the host asks for at
least 4096 bytes, so requests live in 1024..5119), and responses are built at 8192.
"""

from __future__ import annotations

import logging
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hive import abi
from hive.errors import (
    AbiViolation,
    ForbiddenImport,
    GuestExit,
    GuestTrap,
    InvalidModule,
    ResponseTooLarge,
    Timeout,
)
from hive.manifest import WASI_GROUPS, Manifest, parse_manifest
from hive.registry import sha256_hex
from hive.sandbox import CompiledModule, GuestContext, GuestInstance, GuestLimits, Sandbox
from tests.guests import RESP, WASI, const_wat, data, echo_guest, guest, packed, wat

ALLOWED = Manifest(wasi=list(WASI_GROUPS)).allowed_wasi_imports()  # every capability granted


def constant(resp: abi.Response, *fields: str) -> bytes:
    """A guest whose every response is this one envelope."""
    raw = abi.encode_response(resp)
    return guest(packed(RESP, len(raw)), data(RESP, raw), *fields)


OK = constant(abi.Response(200, [(b"content-type", b"text/plain")], b"ok"))

ECHO = echo_guest(gap=12)


def request(
    body: bytes = b"",
    method: bytes = b"GET",
    path: bytes = b"/",
    query: bytes = b"",
    headers: abi.Headers | None = None,
) -> bytes:
    return abi.encode_request(method, path, query, headers or [], body)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    s = Sandbox(tmp_path / "cache")
    yield s
    s.close()


def compile_(sandbox: Sandbox, wasm: bytes, allowed: frozenset[str] = ALLOWED) -> CompiledModule:
    return sandbox.compile(wasm, sha256_hex(wasm), allowed)


def instance(
    sandbox: Sandbox, wasm: bytes, limits: GuestLimits | None = None, ctx: GuestContext | None = None
) -> GuestInstance:
    return GuestInstance(sandbox, compile_(sandbox, wasm), limits or GuestLimits(), ctx or GuestContext("fn"))


# --- serving ---


def test_constant_response(sandbox: Sandbox) -> None:
    resp = instance(sandbox, OK).call(request())
    assert (resp.status, resp.headers, resp.body) == (200, [(b"content-type", b"text/plain")], b"ok")


def test_echo_round_trip(sandbox: Sandbox) -> None:
    body = bytes(range(256)) * 4 + b"\0\r\n"
    headers = [(b"accept", b"*/*"), (b"x-multi", b"1"), (b"x-multi", b"2"), (b"x-bin", b"\xff\x00")]
    sent = request(body, b"POST", b"/api/v1/edge/echo/a%20b", b"q=1&q=2", headers)
    resp = instance(sandbox, ECHO).call(sent)
    assert resp.status == 200
    assert resp.body == sent
    got = abi.decode_request(resp.body)
    assert (got.method, got.path, got.query, got.headers, got.body) == (
        b"POST",
        b"/api/v1/edge/echo/a%20b",
        b"q=1&q=2",
        headers,
        body,
    )


def test_one_instance_serves_many_calls(sandbox: Sandbox) -> None:
    inst = instance(sandbox, ECHO)
    inst.call(request(b"first"))
    ptr, cap = inst.req_ptr, inst.req_cap
    for i in range(50):
        sent = request(f"call {i}".encode() * i)
        assert abi.decode_request(inst.call(sent).body).body == f"call {i}".encode() * i
    assert (inst.req_ptr, inst.req_cap) == (ptr, cap)  # the request buffer is reused
    assert inst.calls == 51
    big = bytes(range(256)) * 1024  # larger than the buffer: the guest is asked for a bigger one
    assert abi.decode_request(inst.call(request(big)).body).body == big
    assert inst.req_cap >= len(request(big)) > cap
    assert abi.decode_request(inst.call(request(b"small again")).body).body == b"small again"


def test_request_buffer_is_allocated_once(sandbox: Sandbox) -> None:
    # Answers with the number of hive_alloc calls so far.
    counting = guest(
        f"""(i32.store (i32.const {RESP}) (i32.const 200))
            (i32.store (i32.const {RESP + 8}) (i32.const 4))
            (i32.store (i32.const {RESP + 12}) (global.get $allocs))
            {packed(RESP, 16)}""",
        "(global $allocs (mut i32) (i32.const 0))",
        alloc="(global.set $allocs (i32.add (global.get $allocs) (i32.const 1))) (i32.const 1024)",
    )
    inst = instance(sandbox, counting)
    counts = [struct.unpack("<I", inst.call(request(b"x" * i)).body)[0] for i in range(20)]
    assert counts == [1] * 20


def test_initialize_runs_before_the_first_call(sandbox: Sandbox) -> None:
    raw = abi.encode_response(abi.Response(200, [], b"ready"))
    wasm = guest(
        f"(if (i32.eqz (global.get $ready)) (then unreachable)) {packed(RESP, len(raw))}",
        "(global $ready (mut i32) (i32.const 0))",
        '(func (export "_initialize") (global.set $ready (i32.const 1)))',
        data(RESP, raw),
    )
    assert instance(sandbox, wasm).call(request()).body == b"ready"


# --- time and memory limits ---


def test_infinite_loop_times_out(sandbox: Sandbox) -> None:
    inst = instance(sandbox, guest("(loop $l (br $l)) unreachable"), GuestLimits(timeout_ms=20))
    with pytest.raises(Timeout) as e:
        inst.call(request())
    assert e.value.code == "timeout"
    assert e.value.status == 504


def test_start_function_that_loops_times_out_at_instantiation(sandbox: Sandbox) -> None:
    wasm = guest("unreachable", "(func $start (loop $l (br $l)))", "(start $start)")
    compiled = compile_(sandbox, wasm)  # compiling does not run it
    with pytest.raises(Timeout):
        GuestInstance(sandbox, compiled, GuestLimits(timeout_ms=20), GuestContext("fn"))


def test_initialize_that_loops_times_out_at_instantiation(sandbox: Sandbox) -> None:
    wasm = guest("unreachable", '(func (export "_initialize") (loop $l (br $l)))')
    with pytest.raises(Timeout):
        instance(sandbox, wasm, GuestLimits(timeout_ms=20))


GROW_UNTIL_REFUSED = """
    (block $refused (loop $grow
      (br_if $refused (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
      (br $grow)))
"""


def test_memory_grow_fails_cleanly_at_the_limit(sandbox: Sandbox) -> None:
    # Grows one page at a time until memory.grow returns -1, then answers with memory.size.
    bomb = guest(
        f"""{GROW_UNTIL_REFUSED}
            (i32.store (i32.const {RESP}) (i32.const 200))
            (i32.store (i32.const {RESP + 8}) (i32.const 4))
            (i32.store (i32.const {RESP + 12}) (memory.size))
            {packed(RESP, 16)}"""
    )
    inst = instance(sandbox, bomb, GuestLimits(memory_bytes=2 << 20))
    for _ in range(2):  # the instance stays usable
        resp = inst.call(request())
        assert resp.status == 200
        assert struct.unpack("<I", resp.body) == (32,)  # 2 MiB / 64 KiB
    assert inst.memory.data_len(inst.store) == 2 << 20


def test_memory_bomb_then_unreachable_traps(sandbox: Sandbox) -> None:
    inst = instance(sandbox, guest(f"{GROW_UNTIL_REFUSED} unreachable"), GuestLimits(memory_bytes=2 << 20))
    with pytest.raises(GuestTrap) as e:
        inst.call(request())
    assert e.value.extra["trap"] == "unreachable"


def test_initial_memory_over_the_limit_fails_at_instantiation(sandbox: Sandbox) -> None:
    with pytest.raises(GuestTrap, match="memory"):
        instance(sandbox, guest("unreachable", pages=64), GuestLimits(memory_bytes=2 << 20))


# --- traps ---


def test_unreachable_traps(sandbox: Sandbox) -> None:
    with pytest.raises(GuestTrap) as e:
        instance(sandbox, guest("unreachable")).call(request())
    assert (e.value.code, e.value.status, e.value.extra["trap"]) == ("trap", 502, "unreachable")


def test_deep_recursion_is_a_stack_overflow(sandbox: Sandbox) -> None:
    wasm = guest(
        "(call $recurse (i32.const 0)) (i64.const 0)",
        "(func $recurse (param $d i32) (call $recurse (i32.add (local.get $d) (i32.const 1))))",
    )
    with pytest.raises(GuestTrap) as e:
        instance(sandbox, wasm).call(request())
    assert e.value.extra["trap"] == "stack_overflow"


def test_out_of_bounds_load_traps(sandbox: Sandbox) -> None:
    with pytest.raises(GuestTrap) as e:
        instance(sandbox, guest("(drop (i32.load (i32.const 70000))) (i64.const 0)")).call(request())
    assert e.value.extra["trap"] == "memory_out_of_bounds"


def test_start_function_that_traps(sandbox: Sandbox) -> None:
    wasm = guest("unreachable", "(func $start unreachable)", "(start $start)")
    with pytest.raises(GuestTrap) as e:
        instance(sandbox, wasm)
    assert e.value.extra["trap"] == "unreachable"


def test_a_new_instance_after_a_trap_starts_clean(sandbox: Sandbox) -> None:
    # A request longer than 64 bytes sets a poison byte and traps; later calls report the poison.
    ok, poisoned = abi.encode_response(abi.Response(200)), abi.encode_response(abi.Response(500))
    wasm = guest(
        f"""(if (i32.gt_u (local.get $len) (i32.const 64))
              (then (i32.store8 (i32.const 0) (i32.const 1)) unreachable))
            (if (result i64) (i32.load8_u (i32.const 0))
              (then {packed(RESP + 64, len(poisoned))})
              (else {packed(RESP, len(ok))}))""",
        data(RESP, ok),
        data(RESP + 64, poisoned),
    )
    compiled = compile_(sandbox, wasm)
    first = GuestInstance(sandbox, compiled, GuestLimits(), GuestContext("fn"))
    assert first.call(request()).status == 200
    with pytest.raises(GuestTrap):
        first.call(request(b"x" * 100))
    assert first.call(request()).status == 500  # memory is not rolled back: why a trapped store is dropped
    fresh = GuestInstance(sandbox, compiled, GuestLimits(), GuestContext("fn"))
    assert fresh.call(request()).status == 200


def test_a_new_instance_after_a_timeout_works(sandbox: Sandbox) -> None:
    raw = abi.encode_response(abi.Response(204))
    wasm = guest(
        f"(if (i32.gt_u (local.get $len) (i32.const 64)) (then (loop $l (br $l)))) {packed(RESP, len(raw))}",
        data(RESP, raw),
    )
    compiled = compile_(sandbox, wasm)
    limits = GuestLimits(timeout_ms=20)
    with pytest.raises(Timeout):
        GuestInstance(sandbox, compiled, limits, GuestContext("fn")).call(request(b"x" * 100))
    assert GuestInstance(sandbox, compiled, limits, GuestContext("fn")).call(request()).status == 204


# --- lying guests ---


@pytest.mark.parametrize(
    "ptr, length",
    [
        (65536, 16),  # just past the end of its one page
        (65530, 12),  # straddles the end
        (0xFFFF_FFF0, 0x20),  # would wrap around in 32-bit arithmetic
        (1024, 0xFFFF_FFFF),  # absurd length
        (0, 0xFFFF_FFFF),
        (0xFFFF_FFFF, 0xFFFF_FFFF),  # -1 as an i64
    ],
)
def test_response_outside_guest_memory(sandbox: Sandbox, ptr: int, length: int) -> None:
    value = (ptr << 32) | length
    value = value - (1 << 64) if value >= 1 << 63 else value  # WAT wants a signed literal
    with pytest.raises(AbiViolation, match="outside guest memory") as e:
        instance(sandbox, guest(f"(i64.const {value})")).call(request())
    assert e.value.code == "abi_violation"
    assert e.value.status == 502


@pytest.mark.parametrize("alloc", ["(i32.const 0)", "(i32.const -1)", "(i32.const 65000)", "(i32.const 0x7ffffff0)"])
def test_hive_alloc_returning_a_bad_pointer(sandbox: Sandbox, alloc: str) -> None:
    # The request buffer is reserved when the instance is created: a bad allocator never serves.
    wasm = guest("unreachable", alloc=alloc)
    with pytest.raises(AbiViolation, match="hive_alloc"):
        instance(sandbox, wasm)


@pytest.mark.parametrize("status", [0, 99, 600, 0xFFFF_FFFF])
def test_response_with_a_bad_status(sandbox: Sandbox, status: int) -> None:
    with pytest.raises(AbiViolation, match="status"):
        instance(sandbox, constant(abi.Response(status))).call(request())


def test_response_envelope_that_is_truncated(sandbox: Sandbox) -> None:
    raw = abi.encode_response(abi.Response(200, [], b"hello"))
    wasm = guest(packed(RESP, len(raw) - 1), data(RESP, raw))
    with pytest.raises(AbiViolation, match="runs past the end"):
        instance(sandbox, wasm).call(request())


def test_response_header_with_a_newline(sandbox: Sandbox) -> None:
    with pytest.raises(AbiViolation, match="control character"):
        instance(sandbox, constant(abi.Response(200, [(b"x-a", b"1\r\nset-cookie: evil")]))).call(request())


def test_response_body_over_the_limit(sandbox: Sandbox) -> None:
    inst = instance(sandbox, constant(abi.Response(200, [], b"x" * 100)), GuestLimits(max_response_bytes=64))
    with pytest.raises(ResponseTooLarge) as e:
        inst.call(request())
    assert e.value.code == "response_too_large"
    assert e.value.status == 502


def test_response_body_at_the_limit(sandbox: Sandbox) -> None:
    inst = instance(sandbox, constant(abi.Response(200, [], b"x" * 64)), GuestLimits(max_response_bytes=64))
    assert inst.call(request()).body == b"x" * 64


def test_huge_response_envelope_is_refused_before_it_is_copied(sandbox: Sandbox) -> None:
    # 2 MiB of memory and a claimed 1.5 MiB envelope, with a 0-byte body limit.
    inst = instance(sandbox, guest(packed(0, 3 << 19), pages=32), GuestLimits(max_response_bytes=0))
    with pytest.raises(ResponseTooLarge):
        inst.call(request())


# --- WASI and hive.* host functions ---


def test_proc_exit_is_a_guest_exit(sandbox: Sandbox) -> None:
    wasm = guest("(call $exit (i32.const 1)) unreachable", f'(import "{WASI}" "proc_exit" (func $exit (param i32)))')
    with pytest.raises(GuestExit) as e:
        instance(sandbox, wasm).call(request())
    assert (e.value.code, e.value.extra["exit_code"]) == ("guest_exit", 1)


def write_fd(fd: int, text: bytes) -> bytes:
    """Writes `text` to `fd` with one fd_write of two iovecs, then answers 200 ok."""
    half = len(text) // 2
    raw = abi.encode_response(abi.Response(200, [], b"ok"))
    return guest(
        f"""(drop (call $fd_write (i32.const {fd}) (i32.const 16) (i32.const 2) (i32.const 48)))
            {packed(RESP, len(raw))}""",
        f'(import "{WASI}" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))',
        data(16, struct.pack("<IIII", 64, half, 64 + half, len(text) - half)),
        data(64, text),
        data(RESP, raw),
    )


@pytest.mark.parametrize("fd, level, stream", [(1, logging.INFO, "stdout"), (2, logging.ERROR, "stderr")])
def test_fd_write_becomes_a_log_record(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture, fd: int, level: int, stream: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    inst = instance(sandbox, write_fd(fd, b"hello from the guest\nno newline"), ctx=GuestContext("greeter", 3))
    assert inst.call(request(), request_id="req-1").body == b"ok"
    records = [r for r in caplog.records if r.name == "hive.guest"]
    assert [r.getMessage() for r in records] == [
        f"[greeter v3 {stream} req-1] hello from the guest",
        f"[greeter v3 {stream} req-1] no newline",  # a partial line is flushed when the call ends
    ]
    for r in records:
        assert (r.levelno, r.function, r.version, r.stream, r.request_id) == (level, "greeter", 3, stream, "req-1")


def test_fd_write_to_another_fd_is_refused(sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    wasm = guest(
        f"""(i32.store (i32.const {RESP}) (i32.const 200))
            (i32.store (i32.const {RESP + 8}) (i32.const 4))
            (i32.store (i32.const {RESP + 12})
              (call $fd_write (i32.const 3) (i32.const 16) (i32.const 1) (i32.const 48)))
            {packed(RESP, 16)}""",
        f'(import "{WASI}" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))',
        data(16, struct.pack("<II", 64, 4)),
        data(64, b"data"),
    )
    assert instance(sandbox, wasm).call(request()).body == struct.pack("<I", 8)  # EBADF
    assert not [r for r in caplog.records if r.name == "hive.guest"]


def test_hive_log(sandbox: Sandbox, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    raw = abi.encode_response(abi.Response(200))
    wasm = guest(
        f"(call $log (i32.const 2) (i32.const 64) (i32.const 7)) {packed(RESP, len(raw))}",
        '(import "hive" "log" (func $log (param i32 i32 i32)))',
        data(64, b"careful"),
        data(RESP, raw),
    )
    instance(sandbox, wasm, ctx=GuestContext("logger")).call(request())
    [record] = [r for r in caplog.records if r.name == "hive.guest"]
    assert (record.levelno, record.getMessage()) == (logging.WARNING, "[logger v0 log -] careful")


# Answers with count, size, the pointer array, then the strings environ_get wrote.
ENVIRON = guest(
    f"""(local $count i32) (local $size i32) (local $ptrs i32)
        (if (call $sizes (i32.const {RESP + 12}) (i32.const {RESP + 16})) (then unreachable))
        (local.set $count (i32.load (i32.const {RESP + 12})))
        (local.set $size (i32.load (i32.const {RESP + 16})))
        (local.set $ptrs (i32.const {RESP + 20}))
        (if (call $get (local.get $ptrs) (i32.add (local.get $ptrs) (i32.shl (local.get $count) (i32.const 2))))
          (then unreachable))
        (i32.store (i32.const {RESP}) (i32.const 200))
        (i32.store (i32.const {RESP + 8})
          (i32.add (i32.const 8) (i32.add (i32.shl (local.get $count) (i32.const 2)) (local.get $size))))
        (i64.or (i64.const {RESP << 32})
                (i64.extend_i32_u (i32.add (i32.load (i32.const {RESP + 8})) (i32.const 12))))""",
    f'(import "{WASI}" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))',
    f'(import "{WASI}" "environ_get" (func $get (param i32 i32) (result i32)))',
)


@pytest.mark.parametrize("env", [[], [b"A=1", b"GREETING=hello world", b"EMPTY="]])
def test_environ_get_returns_the_configured_entries(sandbox: Sandbox, env: list[bytes]) -> None:
    body = instance(sandbox, ENVIRON, ctx=GuestContext("fn", env=env)).call(request()).body
    count, size = struct.unpack_from("<II", body)
    ptrs = struct.unpack_from(f"<{count}I", body, 8)
    strings = body[8 + 4 * count :]
    assert count == len(env)
    assert size == len(strings) == sum(len(e) + 1 for e in env)
    assert strings.split(b"\0")[:-1] == env
    base = RESP + 20 + 4 * count
    assert [strings[p - base :].split(b"\0")[0] for p in ptrs] == env


def clock_guest(clock_id: int) -> bytes:
    """Answers with the errno and the u64 that clock_time_get(clock_id) wrote."""
    return guest(
        f"""(i32.store (i32.const {RESP}) (i32.const 200))
            (i32.store (i32.const {RESP + 8}) (i32.const 12))
            (i32.store (i32.const {RESP + 12})
              (call $clock (i32.const {clock_id}) (i64.const 1) (i32.const {RESP + 16})))
            {packed(RESP, 24)}""",
        f'(import "{WASI}" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))',
    )


def test_clock_time_get_realtime(sandbox: Sandbox) -> None:
    errno, value = struct.unpack("<IQ", instance(sandbox, clock_guest(0)).call(request()).body)
    assert errno == 0
    assert abs(value - time.time_ns()) < 60 * 10**9  # a bound on the value's correctness, not on speed


def test_clock_time_get_monotonic_advances_with_the_hosts(sandbox: Sandbox) -> None:
    """wasmtime's monotonic clock (its origin is the store's start): it never goes back, and it
    advances by no more than the host's monotonic clock between the two calls."""
    inst = instance(sandbox, clock_guest(1))
    host_before = time.monotonic_ns()
    errno1, first = struct.unpack("<IQ", inst.call(request()).body)
    time.sleep(0.01)
    errno2, second = struct.unpack("<IQ", inst.call(request()).body)
    host_elapsed = time.monotonic_ns() - host_before
    assert errno1 == errno2 == 0
    assert 10**7 <= second - first <= host_elapsed


def test_clock_time_get_unknown_clock_traps(sandbox: Sandbox) -> None:
    """wasmtime's WASI traps on an id that is no clock (the instance is then discarded)."""
    with pytest.raises(GuestTrap, match="Invalid enum value Clockid"):
        instance(sandbox, clock_guest(9)).call(request())


def random_guest(ptr: int) -> bytes:
    """Answers with the errno of random_get(ptr, 32) and the 32 bytes at RESP + 16."""
    return guest(
        f"""(i32.store (i32.const {RESP}) (i32.const 200))
            (i32.store (i32.const {RESP + 8}) (i32.const 36))
            (i32.store (i32.const {RESP + 12}) (call $random (i32.const {ptr}) (i32.const 32)))
            {packed(RESP, 48)}""",
        f'(import "{WASI}" "random_get" (func $random (param i32 i32) (result i32)))',
    )


def test_random_get_fills_bytes(sandbox: Sandbox) -> None:
    inst = instance(sandbox, random_guest(RESP + 16))
    first, second = inst.call(request()).body, inst.call(request()).body
    assert first[:4] == second[:4] == b"\0\0\0\0"
    assert len(first) == 36
    assert first[4:] != bytes(32)
    assert first[4:] != second[4:]


def test_random_get_outside_memory_traps(sandbox: Sandbox) -> None:
    with pytest.raises(GuestTrap, match="Pointer out of bounds"):
        instance(sandbox, random_guest(65536 - 16)).call(request())


# --- what a module may import and must export ---


@pytest.mark.parametrize(
    "imp, qualified, manifest",
    [
        ('(import "env" "foo" (func))', "env.foo", None),
        (
            f'(import "{WASI}" "path_open" (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))',
            f"{WASI}.path_open",
            None,
        ),
        (f'(import "{WASI}" "sock_accept" (func (param i32 i32 i32) (result i32)))', f"{WASI}.sock_accept", None),
        (
            f'(import "{WASI}" "clock_time_get" (func (param i32 i64 i32) (result i32)))',
            f"{WASI}.clock_time_get",
            b'{"wasi": ["random", "stdio"]}',
        ),
        (
            f'(import "{WASI}" "fd_write" (func (param i32 i32 i32 i32) (result i32)))',
            f"{WASI}.fd_write",
            b'{"wasi": []}',
        ),
        ('(import "hive" "fetch" (func))', "hive.fetch", None),
        ('(import "env" "table" (table 1 funcref))', "env.table", None),
        ('(import "env" "g" (global i32))', "env.g", None),
    ],
)
def test_forbidden_imports_are_refused_by_name(
    sandbox: Sandbox, imp: str, qualified: str, manifest: bytes | None
) -> None:
    allowed = parse_manifest(manifest).allowed_wasi_imports()
    with pytest.raises(ForbiddenImport) as e:
        compile_(sandbox, guest("unreachable", imp), allowed)
    assert qualified in e.value.message
    assert e.value.extra["import_name"] == qualified
    assert (e.value.code, e.value.status) == ("forbidden_import", 422)
    assert not list(sandbox.cache_dir.glob("*.cwasm"))  # nothing is cached for a refused module


def test_imported_memory_is_refused(sandbox: Sandbox) -> None:
    wasm = wat("""(module (import "env" "memory" (memory 1)) (export "memory" (memory 0))
                  (func (export "hive_abi_v1"))
                  (func (export "hive_alloc") (param i32) (result i32) (i32.const 0))
                  (func (export "hive_handle") (param i32 i32) (result i64) (i64.const 0)))""")
    with pytest.raises(ForbiddenImport, match="env.memory"):
        compile_(sandbox, wasm)


def test_granted_imports_are_accepted(sandbox: Sandbox) -> None:
    imports = [
        f'(import "{WASI}" "clock_time_get" (func (param i32 i64 i32) (result i32)))',
        f'(import "{WASI}" "proc_exit" (func (param i32)))',
        '(import "hive" "log" (func (param i32 i32 i32)))',
    ]
    compile_(sandbox, guest("unreachable", *imports), parse_manifest(b'{"wasi": ["clocks"]}').allowed_wasi_imports())


def test_granted_import_with_the_wrong_type(sandbox: Sandbox) -> None:
    with pytest.raises(InvalidModule, match="fd_write"):
        compile_(sandbox, guest("unreachable", f'(import "{WASI}" "fd_write" (func (param i32) (result i32)))'))


MEMORY = '(memory (export "memory") 1)'
MARKER = '(func (export "hive_abi_v1"))'
ALLOC = '(func (export "hive_alloc") (param i32) (result i32) (i32.const 1024))'
HANDLE = '(func (export "hive_handle") (param i32 i32) (result i64) (i64.const 0))'


@pytest.mark.parametrize(
    "fields, what",
    [
        ([MARKER, ALLOC, HANDLE, "(memory 1)"], "memory"),
        ([MARKER, ALLOC, HANDLE, '(memory 1) (global (export "memory") i32 (i32.const 0))'], "memory"),
        ([MEMORY, ALLOC, HANDLE], "hive_abi_v1"),
        ([MEMORY, MARKER, HANDLE], "hive_alloc"),
        ([MEMORY, MARKER, ALLOC], "hive_handle"),
        (
            [MEMORY, MARKER, ALLOC, '(func (export "hive_handle") (param i32 i32) (result i32) (i32.const 0))'],
            "hive_handle",
        ),
        ([MEMORY, MARKER, HANDLE, '(func (export "hive_alloc") (param i64) (result i32) (i32.const 0))'], "hive_alloc"),
        ([MEMORY, MARKER, HANDLE, '(global (export "hive_alloc") i32 (i32.const 0))'], "hive_alloc"),
        ([MEMORY, ALLOC, HANDLE, '(func (export "hive_abi_v1") (param i32))'], "hive_abi_v1"),
        ([MEMORY, MARKER, ALLOC, HANDLE, '(func (export "hive_free") (param i32))'], "hive_free"),
        ([MEMORY, MARKER, ALLOC, HANDLE, '(func (export "_initialize") (result i32) (i32.const 0))'], "_initialize"),
    ],
)
def test_missing_or_mistyped_exports(sandbox: Sandbox, fields: list[str], what: str) -> None:
    with pytest.raises(InvalidModule, match=what) as e:
        compile_(sandbox, wat(f"(module {' '.join(fields)})"))
    assert (e.value.code, e.value.status) == ("invalid_module", 422)


def test_hive_free_is_optional_and_used(sandbox: Sandbox) -> None:
    # hive_free counts its calls; hive_alloc hands out 1024 then 16384. The reply is the free count.
    wasm = guest(
        f"""(i32.store (i32.const {RESP}) (i32.const 200))
            (i32.store (i32.const {RESP + 8}) (i32.const 4))
            (i32.store (i32.const {RESP + 12}) (global.get $frees))
            {packed(RESP, 16)}""",
        "(global $frees (mut i32) (i32.const 0))",
        "(global $next (mut i32) (i32.const 1024))",
        '(func (export "hive_free") (param i32 i32) (global.set $frees (i32.add (global.get $frees) (i32.const 1))))',
        alloc="(global.get $next) (global.set $next (i32.const 16384))",
        pages=2,
    )
    inst = instance(sandbox, wasm)
    assert inst.call(request(b"small")).body == struct.pack("<I", 0)
    assert inst.call(request(b"x" * 5000)).body == struct.pack("<I", 1)  # the old buffer was given back
    assert inst.req_ptr == 16384


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"hello world",
        b"\0asm",
        b"(module)",  # WAT text: wasmtime would compile it, the sandbox must not
        b"\0asm\x0d\x00\x01\x00" + bytes(16),  # a component's header
        b"\0asm\x02\x00\x00\x00",
    ],
)
def test_not_a_core_module(sandbox: Sandbox, raw: bytes) -> None:
    with pytest.raises(InvalidModule):
        compile_(sandbox, raw)


def test_truncated_module(sandbox: Sandbox) -> None:
    with pytest.raises(InvalidModule, match="does not validate"):
        compile_(sandbox, OK[: len(OK) - 5])


def test_module_that_does_not_validate(sandbox: Sandbox) -> None:
    wasm = guest("(i32.const 0)")  # parses, but hive_handle returns an i32 where it declares an i64
    with pytest.raises(InvalidModule, match="does not validate"):
        compile_(sandbox, wasm)


# --- the artifact cache ---


def test_compile_writes_the_artifact(sandbox: Sandbox) -> None:
    sha = sha256_hex(OK)
    compiled = compile_(sandbox, OK)
    assert compiled.sha256 == sha
    path = sandbox.artifact_path(sha)
    assert path.parent == sandbox.cache_dir
    assert path.name.startswith(sha) and path.suffix == ".cwasm"
    assert path.is_file()
    assert [p.name for p in sandbox.cache_dir.iterdir()] == [path.name]  # no temp files left behind


def test_another_sandbox_loads_the_artifact_without_the_wasm(sandbox: Sandbox) -> None:
    compile_(sandbox, ECHO)
    other = Sandbox(sandbox.cache_dir)
    try:
        compiled = other.load(sha256_hex(ECHO), None, ALLOWED)
        inst = GuestInstance(other, compiled, GuestLimits(), GuestContext("fn"))
        assert abi.decode_request(inst.call(request(b"cached")).body).body == b"cached"
    finally:
        other.close()


def test_load_without_artifact_or_wasm(sandbox: Sandbox) -> None:
    with pytest.raises(FileNotFoundError):
        sandbox.load(sha256_hex(OK), None, ALLOWED)


def test_load_compiles_when_the_artifact_is_missing(sandbox: Sandbox) -> None:
    compiled = sandbox.load(sha256_hex(OK), OK, ALLOWED)
    assert sandbox.artifact_path(sha256_hex(OK)).is_file()
    assert GuestInstance(sandbox, compiled, GuestLimits(), GuestContext("fn")).call(request()).body == b"ok"


def test_load_from_cache_still_checks_imports(sandbox: Sandbox) -> None:
    wasm = clock_guest(0)
    compile_(sandbox, wasm)
    with pytest.raises(ForbiddenImport, match="clock_time_get"):
        sandbox.load(sha256_hex(wasm), None, parse_manifest(b'{"wasi": ["random"]}').allowed_wasi_imports())


@pytest.mark.parametrize(
    "corrupt",
    [lambda raw: b"garbage" * 100, lambda raw: raw[: len(raw) // 2], lambda raw: b""],
    ids=["garbage", "truncated", "empty"],
)
def test_corrupted_artifact_is_recompiled(sandbox: Sandbox, caplog: pytest.LogCaptureFixture, corrupt: object) -> None:
    sha = sha256_hex(OK)
    compile_(sandbox, OK)
    path = sandbox.artifact_path(sha)
    path.write_bytes(corrupt(path.read_bytes()))  # type: ignore[operator]
    compiled = sandbox.load(sha, OK, ALLOWED)
    assert GuestInstance(sandbox, compiled, GuestLimits(), GuestContext("fn")).call(request()).body == b"ok"
    assert any("unusable" in r.getMessage() for r in caplog.records if r.name == "hive.sandbox")
    other = Sandbox(sandbox.cache_dir)  # the bad file was replaced: no wasm needed any more
    try:
        other.load(sha, None, ALLOWED)
    finally:
        other.close()


def test_host_calls_write_into_the_calling_instance_after_memory_grows(sandbox: Sandbox) -> None:
    # Host functions find the caller's memory through the instance (not an export lookup): it must be
    # the instance being called, with its current size. Each call grows memory by a page and has
    # random_get fill 8 bytes in the newest page; the response is those 8 bytes. Two instances share
    # one GuestContext and are called in turn.
    random_get = f'(import "{WASI}" "random_get" (func $random (param i32 i32) (result i32)))'
    handle = f"""(local $at i32)
        (local.set $at (i32.mul (memory.grow (i32.const 1)) (i32.const 65536)))
        (if (i32.ne (call $random (local.get $at) (i32.const 8)) (i32.const 0)) (then unreachable))
        (i32.store (i32.const {RESP}) (i32.const 200))
        (i32.store (i32.const {RESP + 8}) (i32.const 8))
        (i64.store (i32.const {RESP + 12}) (i64.load (local.get $at)))
        {packed(RESP, 20)}"""
    wasm = guest(handle, random_get)
    ctx = GuestContext("shared")
    a, b = instance(sandbox, wasm, ctx=ctx), instance(sandbox, wasm, ctx=ctx)
    seen = set()
    for _ in range(5):
        for inst in (a, b):
            body = inst.call(request()).body
            assert len(body) == 8
            seen.add(body)
    assert len(seen) == 10  # ten different random fills, each read back from the instance that was called
    assert a._fmem.size() == b._fmem.size() == 6 * 65536


def test_a_sandbox_made_before_any_patch_calls_host_functions(tmp_path: Path) -> None:
    """fastcall's trampoline patch must come before any linker gets host functions (a host function
    defined before it crashed the process when a guest called it): whoever makes the Sandbox, and in
    whatever order, a guest's host calls work. In a fresh process, since the patch is process-wide."""
    import subprocess
    import sys

    code = (
        "import sys; from hive.sandbox import Sandbox, fastcall, warm_up; "
        "sb = Sandbox(sys.argv[1]); fastcall.install(); print(warm_up(sb))"
    )
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "6"


SPIN = wat(
    const_wat(
        "done",
        work="""(local.set 0 (i32.const 3000000))
    (loop $l (local.set 0 (i32.sub (local.get 0) (i32.const 1))) (br_if $l (local.get 0)))""",
    )
)


def test_a_lagging_epoch_ticker_does_not_charge_its_lag_to_the_next_call(sandbox: Sandbox) -> None:
    """The ticker fell a second behind the clock (it waited for a core or the GIL): the call that starts
    then still gets its whole time limit, although the ticker catches up while it runs."""
    inst = instance(sandbox, SPIN, GuestLimits(timeout_ms=100))
    assert inst.call(request()).body == b"done"
    sandbox.ticker.ticks -= 1000  # as if the last second's ticks were still to come
    assert sandbox.ticker.lag() >= 999
    for _ in range(200):  # back to back (the GIL is free while the guest runs): the catch-up meets one
        assert inst.call(request()).body == b"done"
        if sandbox.ticker.lag() < 999:
            break
    assert sandbox.ticker.lag() < 999


def _spin(iterations: int) -> str:
    return f"""(local.set 0 (i32.const {iterations}))
    (loop $l (local.set 0 (i32.sub (local.get 0) (i32.const 1))) (br_if $l (local.get 0)))"""


# Spins, calls a Python host function (hive.log), spins again.
SPIN_LOG_SPIN = guest(
    f"""(local $n i32) {_spin(20_000_000).replace("local.set 0", "local.set $n").replace("local.get 0", "local.get $n")}
    (call $log (i32.const 1) (i32.const 64) (i32.const 4))
    {_spin(20_000_000).replace("local.set 0", "local.set $n").replace("local.get 0", "local.get $n")}
    {packed(RESP, len(abi.encode_response(abi.Response(200, [], b"done"))))}""",
    '(import "hive" "log" (func $log (param i32 i32 i32)))',
    data(64, b"half"),
    data(RESP, abi.encode_response(abi.Response(200, [], b"done"))),
)


def test_time_a_guest_waits_for_the_gil_is_not_its_own(sandbox: Sandbox) -> None:
    """The time limit is the guest's CPU time: a guest whose host call waits 400 ms for the GIL (another
    thread holds it: on a busy worker, the event loop and hundreds of guest threads) answers within its
    100 ms limit, while a guest that spins past its limit still ends."""
    import sys
    import threading

    inst = instance(sandbox, SPIN_LOG_SPIN, GuestLimits(timeout_ms=100))
    assert inst.call(request()).body == b"done"  # alone: well within the limit
    out: list[object] = []

    def call() -> None:
        try:
            out.append(inst.call(request()).body)
        except Exception as e:  # noqa: BLE001 - the test reads it
            out.append(e)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(30.0)  # this thread keeps the GIL while it spins
    try:
        t = threading.Thread(target=call)
        t.start()
        time.sleep(0.005)  # the guest is running (its thread gave the GIL up to call it)
        until = time.monotonic() + 0.4
        while time.monotonic() < until:  # holds the GIL: the guest's hive.log waits, so does the ticker
            pass
    finally:
        sys.setswitchinterval(interval)
    t.join(10)
    assert out == [b"done"]
    with pytest.raises(Timeout):  # spinning still ends at the limit
        instance(sandbox, guest("(loop $l (br $l)) unreachable"), GuestLimits(timeout_ms=20)).call(request())
