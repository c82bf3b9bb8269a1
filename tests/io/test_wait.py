"""hive.wait (docs/abi.md, "hive.wait"): a wait with a time-out that does not count as execution time and
ends with the wall-clock limit, and the fetch flag that asks for the final URL after redirects. A real
server, a WAT guest, a real upstream on loopback. hive.hostio's records are checked as units too."""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest
from wasmtime import Module

from hive import abi, hostio
from hive.errors import AbiViolation, InvalidModule
from hive.sandbox import inspect
from tests.guests import wat
from tests.io.guests import ALLOC, BODY, OUT, RESPOND, Result, fetch
from tests.security.common import assert_error, fresh
from tests.support import Server, start_server

pytestmark = pytest.mark.slow

# The request body: i32 mode, i32 timeout_ms, u32 record length, a fetch record (may be empty). The guest
# sends the fetch (if any), then calls wait(target, timeout_ms) with target = 0 (mode 0), the fetch's
# handle (1) or an unknown handle 99 (2). When that timed out and a fetch was sent, it waits for the
# fetch without a time-out. It answers i64 first, i64 last (the two answers) and the last one's result.
WAITER = f"""(module
  (import "hive" "fetch_send" (func $send (param i32 i32) (result i32)))
  (import "hive" "wait" (func $hwait (param i32 i32) (result i64)))
  (import "hive" "result_read" (func $read (param i32 i32 i32) (result i32)))
  (memory (export "memory") 48)
  (func (export "hive_abi_v1"))
  {ALLOC} {BODY} {RESPOND}
  (func (export "hive_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $p i32) (local $mode i32) (local $t i32) (local $rlen i32) (local $h i32) (local $target i32)
    (local $r1 i64) (local $r2 i64) (local $out i32) (local $n i32)
    (local.set $p (i32.add (call $body (local.get $ptr)) (i32.const 4)))
    (local.set $mode (i32.load (local.get $p)))
    (local.set $t (i32.load offset=4 (local.get $p)))
    (local.set $rlen (i32.load offset=8 (local.get $p)))
    (if (local.get $rlen)
      (then (local.set $h (call $send (i32.add (local.get $p) (i32.const 12)) (local.get $rlen)))))
    (if (i32.eq (local.get $mode) (i32.const 1)) (then (local.set $target (local.get $h))))
    (if (i32.eq (local.get $mode) (i32.const 2)) (then (local.set $target (i32.const 99))))
    (local.set $r1 (call $hwait (local.get $target) (local.get $t)))
    (local.set $r2 (local.get $r1))
    (if (i32.and (i64.eqz (local.get $r1)) (i32.ne (local.get $rlen) (i32.const 0)))
      (then (local.set $r2 (call $hwait (local.get $h) (i32.const -1)))))
    (i64.store (i32.const {OUT + 12}) (local.get $r1))
    (i64.store (i32.const {OUT + 20}) (local.get $r2))
    (local.set $out (i32.const {OUT + 28}))
    (if (i64.gt_s (local.get $r2) (i64.const 0))
      (then
        (local.set $n (i32.wrap_i64 (local.get $r2)))
        (drop (call $read (i32.wrap_i64 (i64.shr_u (local.get $r2) (i64.const 32))) (local.get $out) (local.get $n)))
        (local.set $out (i32.add (local.get $out) (local.get $n)))))
    (call $respond (local.get $out))))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("wait") / "data", workers=1)
    grant = {"allowed_hosts": [upstream]}
    deploys = {
        "waiter": grant,
        "quick": {**grant, "limits": {"timeout_ms": 50}},  # 50 ms of guest time; it waits 600
        "walled": {**grant, "limits": {"wall_timeout_ms": 300}},
        "nogrant": {},  # no I/O capabilities: run on the event loop, where the host never waits
    }
    module = wat(WAITER)
    for name, manifest in deploys.items():
        r = s.deploy(name, module, json.dumps(manifest))
        assert r.status_code == 201, r.text
    yield s
    s.stop()


def waited(server: Server, name: str, mode: int, timeout_ms: int, record: bytes = b"") -> tuple[int, int, bytes]:
    body = struct.pack("<iiI", mode, timeout_ms, len(record)) + record
    r = fresh(server, "POST", f"/api/v1/edge/{name}", content=body)
    assert r.status_code == 200, r.text
    first, last = struct.unpack_from("<qq", r.content)
    return first, last, r.content[16:]


def test_a_sleep_does_not_count_against_the_time_limit(server: Server) -> None:
    # 600 ms asleep in a function allowed 50 ms: before hive.wait, a timer polled the clock for that long.
    assert waited(server, "quick", 0, 600) == (0, 0, b"")


def test_a_sleep_past_the_wall_clock_limit_is_a_504(server: Server) -> None:
    r = fresh(server, "POST", "/api/v1/edge/walled", content=struct.pack("<iiI", 0, 2000, 0))
    body = assert_error(r, 504, "wall_timeout")
    assert "timer" in body["message"] and "wall_timeout_ms" in body["message"]
    assert waited(server, "walled", 0, 10) == (0, 0, b"")  # a fresh instance serves next


def test_a_wait_for_a_fetch_past_the_wall_clock_limit_is_a_504(server: Server, upstream: str) -> None:
    rec = fetch(f"{upstream}/slow?ms=2000")
    r = fresh(server, "POST", "/api/v1/edge/walled", content=struct.pack("<iiI", 1, 5000, len(rec)) + rec)
    body = assert_error(r, 504, "wall_timeout")
    assert "upstream" in body["message"]  # the fetch's own wall-clock message


def test_the_first_answer_ends_the_wait(server: Server, upstream: str) -> None:
    first, last, raw = waited(server, "waiter", 0, 20_000, fetch(f"{upstream}/json"))
    assert first == last and first >> 32 == 1 and first & 0xFFFF_FFFF == len(raw)
    resp = Result(raw).response()
    assert resp.status == 200 and json.loads(resp.body)["rate"] == 1.08


def test_a_time_out_before_the_answer_then_the_answer(server: Server, upstream: str) -> None:
    for mode in (0, 1):  # the first in-flight fetch, and that fetch by its handle
        first, last, raw = waited(server, "waiter", mode, 100, fetch(f"{upstream}/slow?ms=1500"))
        assert first == 0, mode  # timed out: the upstream takes 1.5 s
        assert last >> 32 == 1 and Result(raw).response().body == b"slow", mode


def test_nothing_to_wait_for(server: Server) -> None:
    assert waited(server, "waiter", 0, -1)[:2] == (-1, -1)  # no result, no time-out
    assert waited(server, "waiter", 2, 10)[:2] == (-1, -1)  # no such handle


def test_a_result_that_is_ready_is_answered_at_once(server: Server) -> None:
    # Refused at send: its result is ready before any wait, and handle 0 names it.
    first, _, raw = waited(server, "waiter", 0, 20_000, fetch("http://169.254.169.254/latest/meta-data/"))
    assert first >> 32 == 1
    res = Result(raw)
    assert res.kind == 1 and res.code in ("host_not_allowed", "address_not_allowed")


def test_without_io_capabilities_the_host_cannot_wait(server: Server) -> None:
    # A function granted no hosts or stores runs on the event loop: the host answers -2 at once, and
    # a refused fetch's result is still ready.
    assert waited(server, "nogrant", 0, 20_000)[:2] == (-2, -2)
    first, _, raw = waited(server, "nogrant", 1, 20_000, fetch("http://127.0.0.1:9/"))
    assert first >> 32 == 1 and Result(raw).code == "host_not_allowed"


# --- the final URL after redirects (hostio.FETCH_FINAL_URL) ---


def final_url_result(raw: bytes) -> tuple[abi.Response, int, str]:
    """An ok result with the FETCH_FINAL_URL tail: the response, the redirects followed, the final URL."""
    r = abi.Reader(raw)
    assert r.u32("kind") == 0, raw[:200]
    status, count = r.u32("status"), r.u32("header count")
    headers = [(r.bytes("name"), r.bytes("value")) for _ in range(count)]
    body = r.bytes("body")
    redirects, url = r.u32("redirects"), r.bytes("url").decode()
    assert r.pos == r.end
    return abi.Response(status, headers, body), redirects, url


def test_a_fetch_that_asks_gets_the_final_url(server: Server, upstream: str) -> None:
    flags = struct.pack("<I", hostio.FETCH_FINAL_URL)
    _, _, raw = waited(server, "waiter", 1, -1, fetch(f"{upstream}/redirect?to={upstream}/json") + flags)
    resp, redirects, url = final_url_result(raw)
    assert (resp.status, redirects, url) == (200, 1, f"{upstream}/json")
    _, _, raw = waited(server, "waiter", 1, -1, fetch(f"{upstream}/json?a=1") + flags)
    resp, redirects, url = final_url_result(raw)
    assert (resp.status, redirects, url) == (200, 0, f"{upstream}/json?a=1")


def test_a_fetch_that_does_not_ask_gets_the_old_record(server: Server, upstream: str) -> None:
    _, _, raw = waited(server, "waiter", 1, -1, fetch(f"{upstream}/redirect?to={upstream}/json"))
    assert Result(raw).response().status == 200  # abi.decode_response refuses bytes after the body


def test_unknown_fetch_flags_are_refused_as_a_value(server: Server, upstream: str) -> None:
    _, _, raw = waited(server, "waiter", 1, -1, fetch(f"{upstream}/json") + struct.pack("<I", 2))
    res = Result(raw)
    assert res.kind == 1 and res.code == "bad_request" and "flags" in res.message


def test_hostio_fetch_records_with_and_without_flags() -> None:
    plain = fetch("https://api.example.com/", "POST", [("x-a", "1")], b"hi")
    assert hostio.decode_fetch(plain).flags == 0
    call = hostio.decode_fetch(plain + struct.pack("<I", hostio.FETCH_FINAL_URL))
    assert (call.method, call.url, call.headers, call.body, call.flags) == (
        b"POST",
        b"https://api.example.com/",
        [(b"x-a", b"1")],
        b"hi",
        hostio.FETCH_FINAL_URL,
    )
    for bad in (struct.pack("<I", 2), b"\x01\x00", struct.pack("<II", 1, 0)):
        with pytest.raises(AbiViolation):
            hostio.decode_fetch(plain + bad)
    resp = abi.Response(200, [(b"content-type", b"text/plain")], b"ok")
    assert hostio.fetched(resp) == struct.pack("<I", 0) + abi.encode_response(resp)
    assert final_url_result(hostio.fetched(resp, (2, "https://b.example/x"))) == (resp, 2, "https://b.example/x")


VECTORS = json.loads((Path(hostio.__file__).parent / "sdk" / "abi_vectors.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("v", VECTORS["fetch_requests_r3"], ids=lambda v: v["name"])
def test_revision_3_fetch_request_vectors(v: dict) -> None:
    call = hostio.decode_fetch(bytes.fromhex(v["record_hex"]))
    assert (call.method.decode(), call.url.decode(), call.headers, call.body, call.flags) == (
        v["method"],
        v["url"],
        [],
        b"",
        v["flags"],
    )


@pytest.mark.parametrize("v", VECTORS["results_r3"], ids=lambda v: v["name"])
def test_revision_3_result_vectors(v: dict) -> None:
    headers = [(n.encode(), val.encode()) for n, val in v["headers"]]
    resp = abi.Response(v["status"], headers, bytes.fromhex(v["body_hex"]))
    record = hostio.fetched(resp, (v["redirects"], v["url"]))
    assert record.hex() == v["record_hex"]
    assert final_url_result(record) == (resp, v["redirects"], v["url"])


def test_hive_wait_is_importable_with_its_type_only() -> None:
    engine = inspect.build_engine()

    def module(sig: str) -> Module:
        return inspect.compile_module(
            engine,
            wat(f"""(module (import "hive" "wait" (func {sig}))
              (memory (export "memory") 1) (func (export "hive_abi_v1"))
              (func (export "hive_alloc") (param i32) (result i32) (i32.const 0))
              (func (export "hive_handle") (param i32 i32) (result i64) (i64.const 0)))"""),
        )

    inspect.check_interface(module("(param i32 i32) (result i64)"), frozenset())
    with pytest.raises(InvalidModule, match="hive.wait has the wrong type"):
        inspect.check_interface(module("(param i32) (result i64)"), frozenset())
