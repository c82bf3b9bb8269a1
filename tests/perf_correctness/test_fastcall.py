"""hive.sandbox.fastcall against wasmtime-py's public API: the same results, the same traps, time
limits and fuel, the same host-function exceptions, and those exceptions kept per thread."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import wasmtime
from wasmtime import Func, Memory, Store, Trap, TrapCode

from hive import abi
from hive.errors import GuestExit
from hive.manifest import WASI_GROUPS, Manifest
from hive.registry import sha256_hex
from hive.sandbox import CompiledModule, GuestContext, GuestInstance, GuestLimits, Sandbox, fastcall, host
from tests.guests import LOOP_WAT, RESP, TRAP_WAT, WASI, echo_guest, guest, packed, wat

ALLOWED = Manifest(wasi=list(WASI_GROUPS)).allowed_wasi_imports()
ECHO = echo_guest(gap=12)
EXIT = guest("(call $exit (i32.const 7)) (i64.const 0)", f'(import "{WASI}" "proc_exit" (func $exit (param i32)))')
# Writes 8 bytes of the realtime clock through a host function, then answers with its arguments.
ARGS = guest(
    f"""(drop (call $clock (i32.const 0) (i64.const 1) (i32.const 64)))
        (i32.store (i32.const {RESP}) (i32.const 200))
        (i32.store (i32.const {RESP + 8}) (i32.const 8))
        (i32.store (i32.const {RESP + 12}) (local.get $ptr))
        (i32.store (i32.const {RESP + 16}) (local.get $len))
        {packed(RESP, 20)}""",
    f'(import "{WASI}" "clock_time_get" (func $clock (param i32 i64 i32) (result i32)))',
)
# hive_alloc(n) = n * 3 - 5 (wraps), to compare i32 results, signed and unsigned.
ALLOC = guest("(i64.const 0)", alloc="(i32.sub (i32.mul (local.get $n) (i32.const 3)) (i32.const 5))")
GROW = guest(f"(drop (memory.grow (i32.const 3))) {packed(RESP, 0)}")
SPIN_FUEL = guest("(loop $l (br $l)) (i64.const 0)")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    s = Sandbox(tmp_path / "cache")
    yield s
    s.close()


def compiled(sandbox: Sandbox, wasm: bytes, fuel: bool = False) -> CompiledModule:
    return sandbox.compile(wasm, sha256_hex(wasm), ALLOWED, fuel)


class Pair:
    """Two fresh instances of one module: one driven through the public API, one through fastcall."""

    def __init__(self, sandbox: Sandbox, wasm: bytes, fuel: bool = False) -> None:
        c = compiled(sandbox, wasm, fuel)
        self.public = self._instance(c)
        self.fast = self._instance(c)
        fs = fastcall.FastStore(self.fast[0])
        self.fstore = fs
        exports = self.fast[1]
        self.fhandle = fastcall.FastFunc(fs, exports["hive_handle"], ["i32", "i32"], ["i64"])
        self.falloc = fastcall.FastFunc(fs, exports["hive_alloc"], ["i32"], ["i32"])
        self.fmem = fastcall.FastMemory(fs, exports["memory"])

    @staticmethod
    def _instance(c: CompiledModule) -> tuple[Store, dict[str, object]]:
        store = host.new_store(c.engine)
        store.set_epoch_deadline(1 << 40)
        if c.fuel:
            store.set_fuel(1 << 40)
        host.set_current(GuestContext("fn"))
        inst = c.pre.instantiate(store)
        ex = inst.exports(store)
        return store, {name: ex[name] for name in ("hive_handle", "hive_alloc", "memory")}

    def public_handle(self, *args: int) -> int:
        store, ex = self.public
        handle = ex["hive_handle"]
        assert isinstance(handle, Func)
        return handle(store, *args)


def outcome(call: object) -> tuple[str, object, object]:
    """What a call gave: ("ok", value) or the exception's type, trap code and text."""
    try:
        return "ok", call(), None  # type: ignore[operator]
    except Trap as e:
        return type(e).__name__, e.trap_code, str(e)
    except GuestExit as e:
        return type(e).__name__, e.extra.get("exit_code"), e.message
    except wasmtime.WasmtimeError as e:
        return type(e).__name__, None, str(e)


def test_results_are_the_same(sandbox: Sandbox) -> None:
    p = Pair(sandbox, ARGS)
    for args in [(0, 0), (1, 2), (1024, 99), (2**31 - 1, 2**31), (2**32 - 1, 7), (-1, -(2**31))]:
        assert p.fhandle.call2(*args) == p.fhandle(*args) == p.public_handle(*args)
    a = Pair(sandbox, ALLOC)
    alloc = a.public[1]["hive_alloc"]
    assert isinstance(alloc, Func)
    for n in [0, 1, 2, 4096, 2**30, 2**31 - 1, 2**31, 2**32 - 1]:
        assert a.falloc.call1(n) == a.falloc(n) == alloc(a.public[0], n)


def test_memory_base_and_size_follow_grow(sandbox: Sandbox) -> None:
    import ctypes

    p = Pair(sandbox, GROW)
    mem = p.fast[1]["memory"]
    assert isinstance(mem, Memory)
    store = p.fast[0]
    assert p.fmem.base() == ctypes.addressof(mem.data_ptr(store).contents)
    assert p.fmem.size() == mem.data_len(store) == 65536
    p.fhandle.call2(0, 0)
    assert p.fmem.size() == mem.data_len(store) == 4 * 65536
    assert p.fmem.base() == ctypes.addressof(mem.data_ptr(store).contents)


@pytest.mark.parametrize("wasm, code", [(wat(TRAP_WAT), TrapCode.UNREACHABLE)])
def test_traps_are_the_same(sandbox: Sandbox, wasm: bytes, code: TrapCode) -> None:
    p = Pair(sandbox, wasm)
    fast, public = outcome(lambda: p.fhandle.call2(1, 2)), outcome(lambda: p.public_handle(1, 2))
    assert fast == public
    assert fast[:2] == ("Trap", code)


def test_time_limit_is_the_same(sandbox: Sandbox) -> None:
    p = Pair(sandbox, wat(LOOP_WAT))
    p.public[0].set_epoch_deadline(2)
    p.fstore.set_epoch_deadline(2)
    fast, public = outcome(lambda: p.fhandle.call2(0, 0)), outcome(lambda: p.public_handle(0, 0))
    assert fast[:2] == public[:2] == ("Trap", TrapCode.INTERRUPT)


def test_fuel_is_the_same(sandbox: Sandbox) -> None:
    p = Pair(sandbox, ARGS, fuel=True)
    p.public[0].set_fuel(10_000)
    p.fstore.set_fuel(10_000)
    assert p.fhandle.call2(5, 6) == p.public_handle(5, 6)
    assert p.fstore.get_fuel() == p.public[0].get_fuel() < 10_000
    s = Pair(sandbox, SPIN_FUEL, fuel=True)
    s.public[0].set_fuel(1000)
    s.fstore.set_fuel(1000)
    fast, public = outcome(lambda: s.fhandle.call2(0, 0)), outcome(lambda: s.public_handle(0, 0))
    assert fast[:2] == public[:2] == ("Trap", TrapCode.OUT_OF_FUEL)
    assert s.fstore.get_fuel() == s.public[0].get_fuel() == 0


def test_fuel_on_an_engine_without_fuel_raises_like_the_public_api(sandbox: Sandbox) -> None:
    p = Pair(sandbox, ARGS)
    with pytest.raises(wasmtime.WasmtimeError) as fast:
        p.fstore.get_fuel()
    with pytest.raises(wasmtime.WasmtimeError) as public:
        p.public[0].get_fuel()
    assert str(fast.value) == str(public.value)


def test_a_host_function_exception_comes_back_the_same(sandbox: Sandbox) -> None:
    p = Pair(sandbox, EXIT)
    fast, public = outcome(lambda: p.fhandle.call2(0, 0)), outcome(lambda: p.public_handle(0, 0))
    assert fast == public == ("GuestExit", 7, "the guest called proc_exit(7)")


def test_wrong_argument_count_is_refused(sandbox: Sandbox) -> None:
    p = Pair(sandbox, ARGS)
    with pytest.raises(wasmtime.WasmtimeError):
        p.fhandle(1)
    with pytest.raises(TypeError):
        fastcall.FastFunc(p.fstore, p.fast[1]["hive_handle"], ["f32"], [])  # type: ignore[arg-type]


def test_host_exceptions_are_kept_per_thread(sandbox: Sandbox) -> None:
    """One thread's guest raises through a host function while another's traps on its own: each
    must get its own outcome. (With wasmtime-py's process-wide LAST_EXCEPTION a trap could pick up
    the other thread's exception.)"""
    exiting, trapping = compiled(sandbox, EXIT), compiled(sandbox, wat(TRAP_WAT))
    rounds = 400
    seen: dict[str, set[tuple[str, object]]] = {"exit": set(), "trap": set()}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def run(kind: str, c: CompiledModule) -> None:
        try:
            start.wait()
            for _ in range(rounds):
                inst = GuestInstance(sandbox, c, GuestLimits(timeout_ms=10_000), GuestContext(kind))
                try:
                    inst.call(b"x" * 16)
                except Exception as e:  # noqa: BLE001 - recorded and checked below
                    seen[kind].add((type(e).__name__, getattr(e, "code", None)))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [
        threading.Thread(target=run, args=("exit", exiting)),
        threading.Thread(target=run, args=("trap", trapping)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert seen == {"exit": {("GuestExit", "guest_exit")}, "trap": {("GuestTrap", "trap")}}


def test_the_trampoline_is_installed_for_new_linkers() -> None:
    from wasmtime import _func, _linker

    assert _func.trampoline is fastcall._trampoline and _linker.trampoline is fastcall._trampoline
    assert _func.maybe_raise_last_exn is fastcall.maybe_raise_last_exn


def test_a_public_func_with_a_python_host_function_still_works() -> None:
    """Funcs made through the public API (after the swap) pass values and exceptions as before."""
    engine = wasmtime.Engine()
    store = Store(engine)
    i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
    add = Func(store, wasmtime.FuncType([i32, i64], [i64]), lambda a, b: a + b)
    assert add(store, 2**31 - 1, 5) == 2**31 + 4
    boom = Func(store, wasmtime.FuncType([], [i32]), lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        boom(store)
    none = Func(store, wasmtime.FuncType([], [i32]), lambda: None)
    with pytest.raises(TypeError):
        none(store)  # Val conversion refuses None for an i32, as before
    wraps = Func(store, wasmtime.FuncType([], [i32]), lambda: 2**32 + 3)
    assert wraps(store) == 3  # ctypes wraps, like Val.i32


# --- GuestInstance.call (fastcall inside) against a reference built on the public API ---


def reference_call(inst: GuestInstance, envelope: bytes) -> abi.Response:
    """The ABI v1 call through Func.__call__ and Memory (what guest.py did before fastcall)."""
    import ctypes

    store, memory = inst.store, inst.memory
    store.set_epoch_deadline(1 << 20)
    n = len(envelope)
    if n > inst.req_cap:
        cap = max(4096, 1 << (n - 1).bit_length())
        inst.req_ptr, inst.req_cap = inst._alloc(store, cap) & 0xFFFF_FFFF, cap
    base = ctypes.addressof(memory.data_ptr(store).contents)
    ctypes.memmove(base + inst.req_ptr, envelope, n)
    host.set_current(inst.ctx)
    rptr, rlen = abi.split_packed(inst._handle(store, inst.req_ptr, n))
    base = ctypes.addressof(memory.data_ptr(store).contents)
    return abi.decode_response(ctypes.string_at(base + rptr, rlen), inst.limits.max_response_bytes)


def test_guest_instance_calls_match_the_public_api(sandbox: Sandbox) -> None:
    c = compiled(sandbox, ECHO)
    fast = GuestInstance(sandbox, c, GuestLimits(), GuestContext("a"))
    ref = GuestInstance(sandbox, c, GuestLimits(), GuestContext("b"))
    for i in range(40):
        body = bytes((i * 7 + j) % 256 for j in range(i * 301))
        env = abi.encode_request(b"POST", b"/p/%d" % i, b"q=%d" % i, [(b"h", b"%d" % i)] * (i % 5), body)
        assert fast.call(env) == reference_call(ref, env)
