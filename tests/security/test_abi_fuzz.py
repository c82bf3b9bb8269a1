"""Property tests for the ABI v1 envelopes, and a fuzzing guest through the real sandbox.

The host must survive any bytes a guest hands back: decoding either fails with AbiViolation (or its
subclass ResponseTooLarge) or yields a response that is safe to put on the wire.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hive import abi
from hive.errors import AbiViolation, ResponseTooLarge
from hive.registry import sha256_hex
from hive.sandbox import GuestContext, GuestInstance, GuestLimits, Sandbox
from tests.guests import growing_alloc, wat

FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
HOP_BY_HOP = {b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade", b"te", b"trailer"}
MAX_BODY = 1024

u32 = struct.Struct("<I").pack


# --- strategies ---

small = st.binary(max_size=64)
header_pairs = st.lists(st.tuples(small, small), max_size=8)
token_names = st.text(
    alphabet="!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=20
).map(str.encode)
hop_names = st.sampled_from(sorted(HOP_BY_HOP) + [b"Content-Length", b"CONNECTION"])
names = token_names | hop_names | small | st.binary(min_size=250, max_size=260)
values = small | st.sampled_from([b"a\r\nb", b"\x00", b"ok\n", b"x" * 16384, b"x" * 16385, b"\xff\xfe"])


clean_values = small.filter(lambda v: not re.search(rb"[\x00-\x08\x0a-\x1f\x7f]", v))  # no control characters but HTAB


@st.composite
def response_envelopes(draw: st.DrawFn) -> bytes:
    """Envelopes that are mostly well-formed, each part hostile now and then, and sometimes mutated
    (truncated, extended, or a byte changed), so decoding reaches every check and often succeeds."""

    def rarely(good: st.SearchStrategy, bad: st.SearchStrategy) -> object:
        return draw(bad if draw(st.integers(0, 9)) == 0 else good)

    status = rarely(st.sampled_from([200, 204, 301, 404, 599, 100]), st.integers(0, 2**32 - 1))
    n = draw(st.integers(0, 6))
    headers = [(rarely(token_names, names), rarely(clean_values, values)) for _ in range(n)]
    count = rarely(st.just(n), st.integers(0, 300) | st.just(2**32 - 1))
    body = draw(st.binary(max_size=MAX_BODY + 64))
    parts = [u32(status), u32(count)]
    for name, value in headers:
        parts += [u32(len(name)), name, u32(len(value)), value]
    parts += [u32(rarely(st.just(len(body)), st.integers(0, 2**32 - 1))), body]
    raw = b"".join(parts)
    mutation = draw(st.sampled_from(["none"] * 5 + ["truncate", "extend", "flip"]))
    if mutation == "truncate" and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif mutation == "extend":
        raw += draw(st.binary(min_size=1, max_size=16))
    elif mutation == "flip" and raw:
        i = draw(st.integers(0, len(raw) - 1))
        raw = raw[:i] + bytes([raw[i] ^ draw(st.integers(1, 255))]) + raw[i + 1 :]
    return raw


any_response = st.binary(max_size=256) | response_envelopes()


def assert_safe(resp: abi.Response) -> None:
    """What a decoded response must be before any byte of it reaches the client."""
    assert 100 <= resp.status <= 599
    assert len(resp.headers) <= abi.MAX_RESPONSE_HEADERS
    for name, value in resp.headers:
        assert TOKEN.fullmatch(name), name  # a lowercase token
        assert name not in HOP_BY_HOP
        assert len(name) <= abi.MAX_HEADER_NAME and len(value) <= abi.MAX_HEADER_VALUE
        assert b"\r" not in value and b"\n" not in value and b"\x00" not in value
    assert len(resp.body) <= MAX_BODY
    # Normalizing is idempotent: what the host keeps decodes to itself.
    assert abi.decode_response(abi.encode_response(resp), MAX_BODY) == resp


def refused_as(decode: Callable[[], abi.Response]) -> abi.Response | type[AbiViolation]:
    """The decoded response, or the refusal class: ResponseTooLarge or AbiViolation. Anything else (a trap,
    a host crash, a Python error) propagates and fails the test."""
    try:
        return decode()
    except ResponseTooLarge:
        return ResponseTooLarge
    except AbiViolation:
        return AbiViolation


def outcome(raw: bytes) -> abi.Response | type[AbiViolation]:
    return refused_as(lambda: abi.decode_response(raw, MAX_BODY))


# --- pure functions ---


@FUZZ
@given(method=small, path=small, query=small, headers=header_pairs, body=st.binary(max_size=2048))
def test_request_round_trip(method: bytes, path: bytes, query: bytes, headers: abi.Headers, body: bytes) -> None:
    envelope = abi.encode_request(method, path, query, headers, body)
    assert len(envelope) == 20 + len(method) + len(path) + len(query) + len(body) + sum(
        8 + len(n) + len(v) for n, v in headers
    )
    assert abi.decode_request(envelope) == abi.Request(method, path, query, headers, body)
    if envelope:  # every strict prefix and every extension is refused
        with pytest.raises(AbiViolation):
            abi.decode_request(envelope[:-1])
        with pytest.raises(AbiViolation):
            abi.decode_request(envelope + b"\x00")


@FUZZ
@given(raw=st.binary(max_size=512))
def test_decode_request_of_any_bytes(raw: bytes) -> None:
    try:
        req = abi.decode_request(raw)
    except AbiViolation:
        return
    assert abi.encode_request(req.method, req.path, req.query, req.headers, req.body) == raw


@FUZZ
@given(raw=any_response)
def test_decode_response_of_any_bytes(raw: bytes) -> None:
    try:
        resp = abi.decode_response(raw, MAX_BODY)
    except AbiViolation:  # ResponseTooLarge included
        return
    assert_safe(resp)


@FUZZ
@given(
    status=st.integers(200, 599),
    headers=st.lists(st.tuples(token_names, clean_values), max_size=10),
    body=st.binary(max_size=MAX_BODY),
)
def test_valid_responses_decode(status: int, headers: abi.Headers, body: bytes) -> None:
    raw = abi.encode_response(abi.Response(status, headers, body))
    resp = abi.decode_response(raw, MAX_BODY)
    kept = [(n.lower(), v) for n, v in headers if n.lower() not in HOP_BY_HOP]
    assert (resp.status, resp.headers, resp.body) == (status, kept, body)
    assert_safe(resp)


# --- a fuzzing guest in the real sandbox ---

# Returns the request *body* as its response envelope: it walks the request envelope (method, path,
# query, headers) and answers (body_ptr << 32) | body_len. hive_alloc is a bump allocator that grows
# memory when it must.
PARROT = wat(f"""
(module
  (memory (export "memory") 1)
  (func (export "hive_abi_v1"))
  {growing_alloc()}
  (func $skip (param $q i32) (result i32)  ;; past one u32-length-prefixed field
    (i32.add (i32.add (local.get $q) (i32.const 4)) (i32.load (local.get $q))))
  (func (export "hive_handle") (param $ptr i32) (param $len i32) (result i64)
    (local $q i32) (local $count i32)
    (local.set $q (call $skip (call $skip (call $skip (local.get $ptr)))))
    (local.set $count (i32.load (local.get $q)))
    (local.set $q (i32.add (local.get $q) (i32.const 4)))
    (block $done (loop $headers
      (br_if $done (i32.eqz (local.get $count)))
      (local.set $q (call $skip (call $skip (local.get $q))))
      (local.set $count (i32.sub (local.get $count) (i32.const 1)))
      (br $headers)))
    (i64.or (i64.shl (i64.extend_i32_u (i32.add (local.get $q) (i32.const 4))) (i64.const 32))
            (i64.extend_i32_u (i32.load (local.get $q))))))
""")

KNOWN_GOOD = abi.encode_response(abi.Response(201, [(b"x-ok", b"yes")], b"still alive"))


@pytest.fixture(scope="module")
def parrot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GuestInstance]:
    sandbox = Sandbox(Path(tmp_path_factory.mktemp("fuzz")) / "cache")
    try:
        compiled = sandbox.compile(PARROT, sha256_hex(PARROT), frozenset())
        yield GuestInstance(sandbox, compiled, GuestLimits(max_response_bytes=MAX_BODY), GuestContext("parrot"))
    finally:
        sandbox.close()


def through_guest(inst: GuestInstance, raw: bytes, headers: abi.Headers) -> abi.Response | type[AbiViolation]:
    envelope = abi.encode_request(b"POST", b"/api/v1/edge/parrot", b"q=1", headers, raw)
    return refused_as(lambda: inst.call(envelope, "fuzz"))


@FUZZ
@given(raw=st.binary(max_size=4096) | response_envelopes(), headers=header_pairs)
def test_fuzzing_guest_through_the_sandbox(parrot: GuestInstance, raw: bytes, headers: abi.Headers) -> None:
    got = through_guest(parrot, raw, headers)
    assert got == outcome(raw)  # the sandbox decides exactly as the pure decoder does
    if isinstance(got, abi.Response):
        assert_safe(got)
    # The instance keeps working after whatever it just returned.
    assert parrot.call(abi.encode_request(b"GET", b"/", b"", [], KNOWN_GOOD)) == abi.Response(
        201, [(b"x-ok", b"yes")], b"still alive"
    )


def test_fuzzing_guest_edge_cases(parrot: GuestInstance) -> None:
    big = abi.encode_response(abi.Response(200, [], b"x" * (MAX_BODY + 1)))
    assert through_guest(parrot, big, []) is ResponseTooLarge
    assert through_guest(parrot, b"", []) is AbiViolation  # an empty envelope
    assert through_guest(parrot, KNOWN_GOOD + b"\x00", []) is AbiViolation  # a trailing byte
    assert through_guest(parrot, KNOWN_GOOD[:-1], []) is AbiViolation  # one byte short
    assert through_guest(parrot, KNOWN_GOOD, [(b"x", b"y")] * 50) == abi.Response(
        201, [(b"x-ok", b"yes")], b"still alive"
    )
