"""The faster paths give what the straightforward ones gave: the response decoder, telemetry's clock
and metric updates, request ids, and the Invoker's policy for functions that run long."""

from __future__ import annotations

import asyncio
import gc
import json
import re
import struct
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram

from hive import abi, httprules, invoke, telemetry
from hive.errors import AbiViolation
from hive.logs import now_iso
from hive.metrics import BUCKETS
from hive.ratelimit import RateLimiter
from hive.registry import Registry
from hive.render import Reply
from hive.runtime import Runtime
from hive.sandbox import Sandbox
from hive.settings import Settings
from tests.guests import LOOP_WAT, const_wat, wat

VECTORS = json.loads((Path(abi.__file__).parent / "sdk" / "abi_vectors.json").read_text())


def decode_both(buf: bytes, max_body: int = 6 << 20) -> tuple[object, object]:
    """(what decode_response gives, what the field-by-field decoder gives): a Response or (error type, message)."""

    def run(f: object) -> object:
        try:
            return f(buf, max_body)  # type: ignore[operator]
        except AbiViolation as e:
            return type(e), e.message

    return run(abi.decode_response), run(abi._decode_response_checked)


def envelope(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    return abi.encode_response(abi.Response(status, headers, body))


names = st.one_of(
    st.sampled_from([b"content-type", b"X-Upper", b"connection", b"transfer-encoding", b"x"]), st.binary(max_size=20)
)
values = st.one_of(st.sampled_from([b"text/plain", b"a\r\nb", b"\x00", b"close"]), st.binary(max_size=20))


@settings(max_examples=400, deadline=None)
@given(
    st.integers(0, 700),
    st.lists(st.tuples(names, values), max_size=6),
    st.binary(max_size=64),
    st.integers(0, 80),
    st.integers(-3, 3),
)
def test_fast_decoder_agrees_with_the_checked_one(
    status: int, headers: list[tuple[bytes, bytes]], body: bytes, max_body: int, cut: int
) -> None:
    buf = envelope(status, headers, body)
    if cut < 0:
        buf = buf[:cut]  # truncated
    elif cut > 0:
        buf += b"\0" * cut  # trailing bytes
    fast, checked = decode_both(buf, max_body)
    assert fast == checked


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_fast_decoder_agrees_on_arbitrary_bytes(buf: bytes) -> None:
    fast, checked = decode_both(buf)
    assert fast == checked


def test_fast_decoder_agrees_on_the_shared_vectors() -> None:
    vectors = VECTORS["responses"] + VECTORS["invalid_responses"]
    assert vectors
    for vec in vectors:
        fast, checked = decode_both(bytes.fromhex(vec["envelope_hex"]))
        assert fast == checked, vec["name"]
    # Limits at their edges.
    big = envelope(200, [(b"x" * abi.MAX_HEADER_NAME, b"v" * abi.MAX_HEADER_VALUE)], b"b" * 10)
    assert decode_both(big, 10)[0] == decode_both(big, 10)[1] != decode_both(big, 9)[0]
    over = struct.pack("<II", 200, abi.MAX_RESPONSE_HEADERS + 1)
    assert decode_both(over)[0] == decode_both(over)[1]


def test_decode_of_a_memoryview_goes_through_the_checked_decoder() -> None:
    buf = envelope(201, [(b"A", b"b")], b"body")
    assert (
        abi.decode_response(memoryview(buf), 100)
        == abi.decode_response(buf, 100)
        == abi.Response(201, [(b"a", b"b")], b"body")
    )


def test_cached_clock_text_is_the_same_as_now_iso() -> None:
    pattern = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")
    for _ in range(2000):
        before, mine, after = now_iso(), telemetry._now_iso(), now_iso()
        assert pattern.fullmatch(mine)
        assert before <= mine <= after


@pytest.mark.parametrize("way", ["record", "add then flush"])
def test_series_updates_the_metrics_like_the_public_api(way: str) -> None:
    def metrics() -> tuple[CollectorRegistry, Counter, Histogram]:
        reg = CollectorRegistry()
        c = Counter("c", "c", ["function", "status"], registry=reg)
        h = Histogram("h", "h", ["function"], buckets=BUCKETS, registry=reg)
        return reg, c, h

    reg_a, ca, ha = metrics()
    reg_b, cb, hb = metrics()
    series = telemetry._Series(ca.labels("f", "200"), ha.labels("f"), "f")
    samples = [0.0, 1e-6, 0.0001, 0.00010001, 0.003, 0.1, 0.25, 9.9, 10.0, 11.0, 1e9]
    for i, s in enumerate(samples):
        if way == "record":
            series.record(s)
        else:
            series.add(s)
            if i % 4 == 3:
                series.flush()
        cb.labels("f", "200").inc()
        hb.labels("f").observe(s)
    if way != "record":
        series.flush()
        series.flush()  # nothing counted since: writes nothing

    def dump(reg: CollectorRegistry) -> list[tuple[str, list[tuple[str, str]], float]]:
        return sorted(
            (s.name, sorted(s.labels.items()), s.value)
            for fam in reg.collect()
            for s in fam.samples
            if not s.name.endswith("_created")
        )

    assert dump(reg_a) == dump(reg_b)


def test_request_ids_are_unique_hex_and_a_plain_given_id_is_kept() -> None:
    ids = [httprules.request_id_of(None) for _ in range(3000)]
    assert len(set(ids)) == 3000 and all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert httprules.request_id_of("abc-123") == "abc-123"
    assert re.fullmatch(r"[0-9a-f]{16}", httprules.request_id_of("has space"))


# --- the Invoker's thread policy ---


@pytest.fixture
def invoker(settings: Settings) -> invoke.Invoker:
    registry = Registry(settings.data_path / "registry.lmdb")
    sandbox = Sandbox(settings.data_path / "cache")
    runtime = Runtime(settings, registry, sandbox)
    inv = invoke.Invoker(runtime, RateLimiter(settings.data_path / "rl"), telemetry.Telemetry(None))
    yield inv
    inv.close()
    sandbox.close()
    registry.close()


def deploy(inv: invoke.Invoker, name: str, wasm: bytes, timeout_ms: int | None = None) -> None:
    from hive.manifest import parse_manifest
    from hive.registry import sha256_hex

    m = parse_manifest(json.dumps({"limits": {"timeout_ms": timeout_ms}} if timeout_ms else {}))
    inv.runtime.registry.deploy(name, wasm, m, sha256_hex(wasm))
    inv.runtime.sync()


def call(inv: invoke.Invoker, name: str) -> object:
    """Through the invocation core, as both transports do: the body, or the error code."""

    async def go() -> object:
        r = inv.begin(name, b"POST", b"/x", b"", [(b"host", b"test")]).finish()
        reply = r if isinstance(r, Reply) else await r
        return reply.body if reply.status == 200 else json.loads(reply.body)["error"]

    return asyncio.run(go())


def test_a_function_that_runs_long_moves_off_the_loop_and_a_quick_one_stays(invoker: invoke.Invoker) -> None:
    deploy(invoker, "quick", wat(const_wat("ok")))
    deploy(invoker, "spin", wat(LOOP_WAT), timeout_ms=30)
    for _ in range(20):
        assert call(invoker, "quick") == b"ok"
    assert not invoker.offload(invoker.runtime.lookup("quick"))
    assert call(invoker, "spin") == "timeout"  # on the loop, the first time
    assert invoker.offload(invoker.runtime.lookup("spin"))
    main = threading_ident()
    seen: list[int] = []
    real = invoker.runtime.invoke

    def spy(*a: object, **k: object) -> object:
        seen.append(threading_ident())
        return real(*a, **k)  # type: ignore[arg-type]

    invoker.runtime.invoke = spy  # type: ignore[method-assign]
    assert call(invoker, "spin") == "timeout"  # now in a guest thread
    assert call(invoker, "quick") == b"ok"  # still on the loop
    assert seen[0] != main and seen[1] == main
    # The instance that timed out in the thread is replaced on the loop (call_soon_threadsafe).
    assert invoker.runtime.lookup("spin").idle


def test_it_comes_back_after_enough_quick_calls(invoker: invoke.Invoker) -> None:
    deploy(invoker, "f", wat(const_wat("ok")))
    invoker._observe("f", 10**9)  # as if one call had run a second
    assert invoker.offload(invoker.runtime.lookup("f"))
    # Off: a cyclic collection of the whole test session's heap inside one call would make that call
    # look long (over a quarter of OFFLOAD_AFTER_MS of CPU) and rightly restart the count.
    # A call that pays a one-off cost (a guest thread's first wasm call sets up wasmtime's per-thread
    # state) rightly restarts the count too: it must come back after RETURN_AFTER_FAST_CALLS quick
    # calls in a row, never sooner, and within a bounded number of calls.
    gc.disable()
    came_back = None
    try:
        for i in range(1, 3 * invoke.RETURN_AFTER_FAST_CALLS + 1):
            assert call(invoker, "f") == b"ok"
            if not invoker.offload(invoker.runtime.lookup("f")):
                came_back = i
                break
    finally:
        gc.enable()
    assert came_back is not None and came_back >= invoke.RETURN_AFTER_FAST_CALLS


def test_the_policy_counts_cpu_time_not_waiting(invoker: invoke.Invoker) -> None:
    """A quick call that waits (here: sleeps, as a thread does that waits for the core or the GIL)
    must not be taken for a long one."""
    deploy(invoker, "f", wat(const_wat("ok")))
    real = invoker.runtime.invoke

    def slow_to_get_the_core(*a: object, **k: object) -> object:
        time.sleep(0.02)
        return real(*a, **k)  # type: ignore[arg-type]

    invoker.runtime.invoke = slow_to_get_the_core  # type: ignore[method-assign]
    assert call(invoker, "f") == b"ok"
    assert not invoker.offload(invoker.runtime.lookup("f"))


def threading_ident() -> int:
    import threading

    return threading.get_ident()
