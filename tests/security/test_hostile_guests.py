"""Hostile guests against a real server (2 gunicorn workers).

Every case checks a clear JSON error with a stable code, that the server still serves, and that a
neighbour ("steady", pinged in the background on a keep-alive connection the whole time) is never
disturbed. The last test stops the server and opens the LMDB registry: consistent, and every
function with the version it should have (a refused deploy leaves the previous version current).
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from hive.sandbox.host import MAX_LINE, MAX_LOG_BYTES_PER_CALL, MAX_LOG_LINES_PER_CALL
from tests.guests import RESP, WASI, data, guest, packed
from tests.security.common import (
    Pinger,
    assert_error,
    check_registry,
    const_guest,
    fresh,
    function_log,
    healthy,
    invoke,
    respond_u32,
    u32s,
    with_data_segment,
)
from tests.support import Server, start_server

pytestmark = pytest.mark.slow

STEADY = b"steady"


@dataclass
class Hostile:
    server: Server
    pinger: Pinger
    workers: set[int]
    expected: dict[str, int | None] = field(default_factory=dict)
    checked: bool = False

    def deploy(self, name: str, wasm: bytes, manifest: dict | None = None, version: int | None = None) -> dict:
        """Deploy that must succeed; records the version the registry must end with."""
        r = self.server.deploy(name, wasm, json.dumps(manifest) if manifest is not None else None)
        assert r.status_code == 201, r.text
        rec = r.json()
        if version is not None:
            assert rec["version"] == version
        self.expected[name] = rec["version"]
        return rec

    def unharmed(self) -> None:
        """The server serves, no worker died, and the neighbour answers as always."""
        healthy(self.server)
        assert self.server.worker_pids() == self.workers
        r = invoke(self.server, "steady")
        assert (r.status_code, r.content) == (200, STEADY)

    def finish(self) -> None:
        if self.checked:
            return
        self.checked = True
        self.pinger.stop()
        assert self.pinger.results, "the background client never got an answer"
        assert self.pinger.failures() == [], self.pinger.failures()[:5]
        assert self.server.worker_pids() == self.workers
        check_registry(self.server, self.expected)


@pytest.fixture(scope="module")
def hive(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hostile]:
    server = start_server(tmp_path_factory.mktemp("hostile") / "data", workers=2)
    try:
        h = Hostile(server, Pinger(server, "steady", STEADY), server.worker_pids())
        h.deploy("steady", const_guest(STEADY))
        h.pinger.start()
        yield h
        h.finish()
    finally:
        server.stop()


# --- time ---


def test_infinite_loop_is_a_timeout(hive: Hostile) -> None:
    hive.deploy("spin", guest("(loop $l (br $l)) unreachable"), {"limits": {"timeout_ms": 50}})
    for _ in range(4):  # both workers, and again after the instance was replaced
        assert_error(invoke(hive.server, "spin"), 504, "timeout")
        hive.unharmed()


def test_start_function_that_loops_is_refused_at_deploy(hive: Hostile) -> None:
    hive.deploy("starter", const_guest(b"v1"), version=1)
    looping = guest("unreachable", "(func $start (loop $l (br $l)))", "(start $start)")
    body = assert_error(hive.server.deploy("starter", looping), 422, "invalid_module")
    assert body["cause"] == "timeout"
    hive.unharmed()
    assert invoke(hive.server, "starter").content == b"v1"  # the previous version still serves


# --- memory, tables, stack ---

GROW_MEMORY = """
    (local.set $first (memory.grow (i32.const 65535)))
    (block $refused (loop $grow
      (br_if $refused (i32.eq (memory.grow (i32.const 1)) (i32.const -1)))
      (br $grow)))
"""


def test_memory_grow_bomb_is_refused_and_the_limit_holds(hive: Hostile) -> None:
    # One huge grow, then one page at a time until refused; answers [huge grow result, memory.size].
    bomb = guest(f"(local $first i32) {GROW_MEMORY} {respond_u32('(local.get $first)', '(memory.size)')}")
    hive.deploy("membomb", bomb, {"limits": {"memory_mb": 4}})
    for _ in range(4):  # the same instance again: the guest saw -1 and carried on
        r = invoke(hive.server, "membomb")
        assert r.status_code == 200, r.text
        assert u32s(r.content) == [-1, 4 * 16]  # 4 MiB of 64 KiB pages, not a page more
    hive.unharmed()


def test_memory_grow_bomb_that_then_traps(hive: Hostile) -> None:
    hive.deploy("membomb-trap", guest(f"(local $first i32) {GROW_MEMORY} unreachable"), {"limits": {"memory_mb": 4}})
    for _ in range(3):
        body = assert_error(invoke(hive.server, "membomb-trap"), 502, "trap")
        assert body["trap"] == "unreachable"
        hive.unharmed()


GROW_TABLE = """
    (local.set $first (table.grow $t (ref.null func) (i32.const 0x7fffffff)))
    (block $refused (loop $grow
      (br_if $refused (i32.eq (table.grow $t (ref.null func) (i32.const 1000)) (i32.const -1)))
      (br $grow)))
"""


def test_table_grow_bomb_is_refused_at_the_store_limit(hive: Hostile) -> None:
    # GuestLimits.table_elements is 100,000: table.grow returns -1 there, and the guest reports it.
    bomb = guest(
        f"(local $first i32) {GROW_TABLE} {respond_u32('(local.get $first)', '(table.size $t)')}",
        "(table $t 0 funcref)",
    )
    hive.deploy("tablebomb", bomb)
    for _ in range(3):
        r = invoke(hive.server, "tablebomb")
        assert r.status_code == 200, r.text
        first, size = u32s(r.content)
        assert first == -1
        assert size == 100_000
    hive.unharmed()


def test_table_grow_bomb_that_then_traps(hive: Hostile) -> None:
    hive.deploy("tablebomb-trap", guest(f"(local $first i32) {GROW_TABLE} unreachable", "(table $t 0 funcref)"))
    body = assert_error(invoke(hive.server, "tablebomb-trap"), 502, "trap")
    assert body["trap"] == "unreachable"
    hive.unharmed()


def test_deep_recursion_is_a_stack_overflow(hive: Hostile) -> None:
    hive.deploy(
        "recurse",
        guest(
            "(call $down (i32.const 0)) (i64.const 0)",
            "(func $down (param $d i32) (call $down (i32.add (local.get $d) (i32.const 1))))",
        ),
    )
    for _ in range(3):
        body = assert_error(invoke(hive.server, "recurse"), 502, "trap")
        assert body["trap"] == "stack_overflow"
        hive.unharmed()


# --- lying about the ABI ---


@pytest.mark.parametrize(
    "case, ptr, length",
    [
        (0, 65536, 16),  # just past the end of its one page
        (1, 65530, 12),  # straddles the end
        (2, 0xFFFF_FFF0, 0x20),  # would wrap around in 32-bit arithmetic
        (3, 1024, 0xFFFF_FFFF),  # an absurd length
        (4, 0xFFFF_FFFF, 0xFFFF_FFFF),  # -1
    ],
)
def test_response_outside_guest_memory(hive: Hostile, case: int, ptr: int, length: int) -> None:
    name = f"resp-oob-{case}"
    hive.deploy(name, guest(packed(ptr, length)))
    body = assert_error(invoke(hive.server, name), 502, "abi_violation")
    assert "outside guest memory" in body["message"]
    hive.unharmed()


@pytest.mark.parametrize(
    "case, alloc",
    [
        (0, "(i32.const 0)"),  # "out of memory"
        (1, "(i32.const 65000)"),  # the 4096-byte buffer would run past the end of memory
        (2, "(i32.const -1)"),  # negative
        (3, "(i32.const 0x7ffffff0)"),  # far outside
    ],
)
def test_hive_alloc_returning_garbage(hive: Hostile, case: int, alloc: str) -> None:
    # An instance reserves its request buffer when it is created, so the trial instance at deploy
    # finds the broken allocator: refused, and the previous version keeps serving.
    name = f"alloc-garbage-{case}"
    hive.deploy(name, const_guest(b"v1"), version=1)
    body = assert_error(hive.server.deploy(name, guest("unreachable", alloc=alloc)), 422, "invalid_module")
    assert body["cause"] == "abi_violation" and "hive_alloc" in body["message"], body
    for _ in range(2):
        assert invoke(hive.server, name, content=b"hello").content == b"v1"
        hive.unharmed()


def test_proc_exit_is_a_guest_exit(hive: Hostile) -> None:
    exiting = guest("(call $exit (i32.const 1)) unreachable", f'(import "{WASI}" "proc_exit" (func $exit (param i32)))')
    hive.deploy("quitter", exiting, {"wasi": []})  # proc_exit needs no grant
    for _ in range(3):
        body = assert_error(invoke(hive.server, "quitter"), 502, "guest_exit")
        assert body["exit_code"] == 1
        hive.unharmed()


# --- imports the sandbox refuses at deploy ---

ALL_GROUPS = ["clocks", "random", "stdio", "env"]


@pytest.mark.parametrize(
    "name, imp, wasi",
    [
        (
            "files",
            '(import "wasi_snapshot_preview1" "path_open" '
            "(func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))",
            ALL_GROUPS,
        ),
        (
            "dirs",
            '(import "wasi_snapshot_preview1" "fd_readdir" (func (param i32 i32 i32 i64 i32) (result i32)))',
            ALL_GROUPS,
        ),
        (
            "snoop",
            '(import "wasi_snapshot_preview1" "environ_get" (func (param i32 i32) (result i32)))',
            ["clocks", "random", "stdio"],
        ),
        (
            "snoop-sizes",
            '(import "wasi_snapshot_preview1" "environ_sizes_get" (func (param i32 i32) (result i32)))',
            [],
        ),
        (
            "listener",
            '(import "wasi_snapshot_preview1" "sock_accept" (func (param i32 i32 i32) (result i32)))',
            ALL_GROUPS,
        ),
        (
            "sender",
            '(import "wasi_snapshot_preview1" "sock_send" (func (param i32 i32 i32 i32 i32) (result i32)))',
            ALL_GROUPS,
        ),
        ("shell", '(import "env" "system" (func (param i32) (result i32)))', ALL_GROUPS),
    ],
)
def test_forbidden_import_is_refused_by_name(hive: Hostile, name: str, imp: str, wasi: list[str]) -> None:
    hive.deploy(name, const_guest(b"good v1"), {"wasi": wasi}, version=1)
    qualified = ".".join(re.findall(r'"([^"]+)"', imp)[:2])
    body = assert_error(
        hive.server.deploy(name, guest("unreachable", imp), json.dumps({"wasi": wasi})), 422, "forbidden_import"
    )
    assert body["import_name"] == qualified
    assert qualified in body["message"]
    hive.unharmed()
    r = invoke(hive.server, name)
    assert (r.status_code, r.content) == (200, b"good v1")  # the previous version still serves


def test_env_is_readable_only_with_the_env_grant(hive: Hostile) -> None:
    reader = guest("unreachable", '(import "wasi_snapshot_preview1" "environ_get" (func (param i32 i32) (result i32)))')
    assert_error(hive.server.deploy("env-reader", reader, json.dumps({"wasi": ["stdio"]})), 422, "forbidden_import")
    hive.deploy("env-reader", reader, {"wasi": ["env"], "config": {"TOKEN": "s3cret-value"}})


def test_a_manifest_without_a_wasi_list_grants_the_harmless_groups(hive: Hostile) -> None:
    """Clocks, random, stdio and env are granted by default (as every peer does); an explicit list is exact,
    and a refusal names the grant that would allow the import."""
    clock = guest("unreachable", f'(import "{WASI}" "clock_time_get" (func (param i32 i64 i32) (result i32)))')
    hive.deploy("default-clock", clock, {})
    body = assert_error(hive.server.deploy("narrowed", clock, json.dumps({"wasi": ["stdio"]})), 422, "forbidden_import")
    assert body["import_name"] == "wasi_snapshot_preview1.clock_time_get" and body["grant"] == "clocks"
    assert '"wasi": [..., "clocks"]' in body["message"] and "hive.toml [permissions]" in body["message"]
    hive.expected["narrowed"] = None
    files = guest(
        "unreachable", f'(import "{WASI}" "path_open" (func (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)))'
    )
    body = assert_error(hive.server.deploy("no-files", files), 422, "forbidden_import")
    assert body["grant"] is None and "nothing can grant it" in body["message"]
    hive.expected["no-files"] = None
    hive.unharmed()


# --- floods ---

FLOOD_LINES = 100_000
LINE = b"flood-line-" + b"x" * 88 + b"\n"  # 100 bytes with the newline


def _flood(call: str, *fields: str) -> bytes:
    raw = (200).to_bytes(4, "little") + (0).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"done"
    return guest(
        f"""(local $i i32)
        (block $done (loop $l
          (br_if $done (i32.ge_u (local.get $i) (i32.const {FLOOD_LINES})))
          {call}
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $l)))
        {packed(RESP, len(raw))}""",
        data(RESP, raw),
        *fields,
    )


FLOODS = {
    # hive.log, 100 bytes a line: the byte cap bites first.
    "log-flood": (
        _flood(
            "(call $log (i32.const 1) (i32.const 64) (i32.const 99))",
            '(import "hive" "log" (func $log (param i32 i32 i32)))',
            data(64, LINE),
        ),
        [],
    ),
    # hive.log with empty lines: they cost no bytes, so only the line cap stops them.
    "empty-flood": (
        _flood(
            "(call $log (i32.const 1) (i32.const 64) (i32.const 0))",
            '(import "hive" "log" (func $log (param i32 i32 i32)))',
        ),
        [],
    ),
    # fd_write to stdout, one short line per call.
    "stdout-flood": (
        _flood(
            "(drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 32)))",
            f'(import "{WASI}" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))',
            data(16, (64).to_bytes(4, "little") + (6).to_bytes(4, "little")),
            data(64, b"flood\n"),
        ),
        ["stdio"],
    ),
}


@pytest.mark.parametrize("name", list(FLOODS))
def test_log_flood_is_capped_per_call(hive: Hostile, name: str) -> None:
    wasm, wasi = FLOODS[name]
    # 100,000 host calls take about a second: either they finish or the time limit ends them.
    hive.deploy(name, wasm, {"wasi": wasi, "limits": {"timeout_ms": 3000}})
    log_before = hive.server.log_path.stat().st_size
    calls = 2
    ids = [f"{name}-{uuid.uuid4().hex[:8]}" for _ in range(calls)]
    for rid in ids:
        r = invoke(hive.server, name, headers={"x-request-id": rid})
        if r.status_code == 200:
            assert r.content == b"done"
        else:
            assert_error(r, 504, "timeout")
        hive.unharmed()
    grew = hive.server.log_path.stat().st_size - log_before
    # Each line costs well under 300 bytes of log framing; without the caps this is 100,000 lines a call.
    per_call = MAX_LOG_BYTES_PER_CALL + MAX_LINE + MAX_LOG_LINES_PER_CALL * 300
    assert grew <= calls * per_call, f"the server log grew by {grew} bytes"
    records = function_log(hive.server, name)
    for rid in ids:
        lines = [r for r in records if r["kind"] == "output" and r["request_id"] == rid]
        assert 0 < len(lines) <= MAX_LOG_LINES_PER_CALL
        assert sum(len(r["text"]) for r in lines) <= MAX_LOG_BYTES_PER_CALL + MAX_LINE
    assert "of guest output over the per-call limit" in hive.server.log()


# --- a guest that fails every other call ---

FLAKY = guest(
    f"""
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (if (i32.eqz (i32.and (global.get $n) (i32.const 1))) (then unreachable))
    {respond_u32("(global.get $n)")}""",
    "(global $n (mut i32) (i32.const 0))",
)


def test_trap_on_every_other_call_alternates_per_worker(hive: Hostile) -> None:
    """The guest counts its calls in a global and traps on the 2nd, 4th, ... call of an instance.

    A trapped instance is thrown away and its replacement starts with the counter at 0, so every
    instance answers exactly once (with count 1) and traps on its next call. Per worker (sequential
    requests use one instance at a time) the statuses therefore alternate 200, 502, 200, 502 ...
    starting with 200, and never fail twice in a row. Across workers the order interleaves.
    """
    hive.deploy("flaky", FLAKY)
    # One keep-alive connection stays on one worker: strict alternation.
    with hive.server.client() as c:
        statuses = []
        for _ in range(20):
            r = c.post("/api/v1/edge/flaky")
            statuses.append(r.status_code)
            if r.status_code == 200:
                assert u32s(r.content) == [1]  # always a fresh instance's first call
            else:
                assert_error(r, 502, "trap")
    assert statuses == [200, 502] * 10

    # Fresh connections spread over both workers; the function log says which worker served which.
    sent = []
    for i in range(40):
        rid = f"flaky-{i}-{uuid.uuid4().hex[:8]}"
        r = invoke(hive.server, "flaky", headers={"x-request-id": rid})
        assert r.status_code in (200, 502), r.text
        if r.status_code == 502:
            assert_error(r, 502, "trap")
        sent.append((rid, r.status_code))
    hive.unharmed()
    served = {r["request_id"]: r for r in function_log(hive.server, "flaky") if r["kind"] == "invocation"}
    by_worker: dict[int, list[int]] = {}
    for rid, status in sent:
        assert served[rid]["status"] == status
        by_worker.setdefault(served[rid]["pid"], []).append(status)
    assert set(by_worker) <= hive.workers
    for pid, seq in by_worker.items():
        # Both workers start this run with a fresh instance (the keep-alive run ended on a trap).
        assert seq == [200 if i % 2 == 0 else 502 for i in range(len(seq))], (pid, seq)


# --- oversized modules ---


def test_enormous_data_section_is_refused(hive: Hostile) -> None:
    hive.deploy("bulky", const_guest(b"small v1"), version=1)
    # 60 MB of data in a 64 MiB memory: over the 50 MiB upload limit.
    huge = with_data_segment(guest("unreachable", pages=1024), 60_000_000)
    body = assert_error(hive.server.deploy("bulky", huge), 413, "payload_too_large")
    # The reported limit includes the 64 KiB the app allows for multipart framing (reported to hive/app.py).
    assert 50 << 20 <= body["limit"] <= (50 << 20) + (64 << 10)
    hive.unharmed()
    # Under the upload limit, but its 64 MiB of initial memory exceeds the function's memory_mb.
    big = with_data_segment(guest("unreachable", pages=1024), 40_000_000)
    body = assert_error(
        hive.server.deploy("bulky", big, json.dumps({"limits": {"memory_mb": 32}})), 422, "invalid_module"
    )
    assert "memory" in body["message"]
    hive.unharmed()
    assert invoke(hive.server, "bulky").content == b"small v1"


# --- fuel ---


def _fuel_total(hive: Hostile, name: str) -> float:
    r = fresh(hive.server, "GET", "/metrics", headers=hive.server.admin)
    assert r.status_code == 200
    pattern = re.compile(rf'^hive_fuel_consumed_total\{{[^}}]*function="{re.escape(name)}"[^}}]*\}} (\S+)$', re.M)
    return sum(float(v) for v in pattern.findall(r.text))


def test_fuel_budget_reports_use_and_stops_loops(hive: Hostile) -> None:
    budget = 1_000_000
    hive.deploy("fueled", const_guest(b"fuel ok"), {"limits": {"fuel": budget}})
    before = _fuel_total(hive, "fueled")
    used = []
    for _ in range(5):
        r = invoke(hive.server, "fueled")
        assert (r.status_code, r.content) == (200, b"fuel ok")
        assert re.fullmatch(r"[0-9]+", r.headers["x-hive-fuel-used"])
        used.append(int(r.headers["x-hive-fuel-used"]))
    assert all(0 < u <= budget for u in used)
    assert _fuel_total(hive, "fueled") >= before + sum(used)

    # A time limit far away: the fuel budget is what ends the loop.
    hive.deploy(
        "fuel-spin", guest("(loop $l (br $l)) unreachable"), {"limits": {"fuel": 100_000, "timeout_ms": 10_000}}
    )
    spin_before = _fuel_total(hive, "fuel-spin")
    for _ in range(3):
        body = assert_error(invoke(hive.server, "fuel-spin"), 504, "fuel_exhausted")
        assert 0 < body["fuel_used"] <= 100_000
        hive.unharmed()
    assert _fuel_total(hive, "fuel-spin") > spin_before


# --- last: the registry survived all of it ---


def test_zz_registry_is_intact_after_everything(hive: Hostile) -> None:
    hive.unharmed()
    hive.finish()
