"""Hostile HTTP requests against a real server (2 gunicorn workers, uvicorn + httptools).

Each is refused with a 4xx (a JSON error from the app, or uvicorn's plain 400 for what httptools can't
parse) or passed through to the guest intact; never a 500, and the server keeps serving. Requests
that try to smuggle a second request target "canary", a function that must never run.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from hive import abi
from tests.guests import RESP, data, echo_guest, guest, packed
from tests.security.common import (
    assert_error,
    check_registry,
    chunks,
    const_guest,
    fresh,
    function_log,
    healthy,
    invoke,
    poll,
)
from tests.support import Server, start_server

pytestmark = pytest.mark.slow

SMALL_LIMIT = 1024
DEFAULT_LIMIT = 6 * 1024 * 1024

ECHO = echo_guest(gap=16)

# A legitimately chatty function: 1,024 two-byte log lines per call (within the per-call caps).
_DONE = (200).to_bytes(4, "little") + (0).to_bytes(4, "little") + (4).to_bytes(4, "little") + b"done"
CHATTY = guest(
    f"""(local $i i32)
    (block $done (loop $l
      (br_if $done (i32.ge_u (local.get $i) (i32.const 1024)))
      (call $log (i32.const 1) (i32.const 64) (i32.const 2))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $l)))
    {packed(RESP, len(_DONE))}""",
    '(import "hive" "log" (func $log (param i32 i32 i32)))',
    data(64, b"hi"),
    data(RESP, _DONE),
    alloc="(i32.const 65536)",
    pages=4,
)


@dataclass
class Target:
    server: Server
    port: int

    def raw(self, payload: bytes, timeout: float = 10) -> bytes:
        """Send raw bytes on a new connection; everything the server answers until it closes."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as c:
            c.sendall(payload)
            out = b""
            while True:
                try:
                    b = c.recv(65536)
                except ConnectionResetError:
                    break
                if not b:
                    break
                out += b
            return out

    def canary_calls(self) -> int:
        return sum(1 for r in function_log(self.server, "canary") if r["kind"] == "invocation")

    def steady(self) -> None:
        healthy(self.server)
        r = invoke(self.server, "steady")
        assert (r.status_code, r.content) == (200, b"steady")


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    server = start_server(tmp_path_factory.mktemp("requests") / "data", workers=2)
    try:
        for name, wasm, manifest in [
            ("steady", const_guest(b"steady"), None),
            ("echo", ECHO, '{"limits": {"memory_mb": 32}}'),
            ("small", ECHO, f'{{"limits": {{"max_request_bytes": {SMALL_LIMIT}}}}}'),
            ("canary", const_guest(b"canary"), None),
            ("chatty", CHATTY, None),
        ]:
            r = server.deploy(name, wasm, manifest)
            assert r.status_code == 201, r.text
        yield Target(server, int(server.url.rsplit(":", 1)[1]))
        check_registry(server, {"steady": 1, "echo": 1, "small": 1, "canary": 1, "chatty": 1})
    finally:
        server.stop()


def statuses(raw: bytes) -> list[int]:
    return [int(s) for s in re.findall(rb"HTTP/1\.1 (\d{3}) ", raw)]


def echoed(body: bytes) -> abi.Request:
    return abi.decode_request(body)


# --- bodies ---


def test_body_at_and_over_a_function_limit(target: Target) -> None:
    r = invoke(target.server, "small", content=b"a" * SMALL_LIMIT)
    assert r.status_code == 200 and echoed(r.content).body == b"a" * SMALL_LIMIT
    body = assert_error(invoke(target.server, "small", content=b"a" * (SMALL_LIMIT + 1)), 413, "payload_too_large")
    assert body["limit"] == SMALL_LIMIT
    target.steady()


def test_chunked_body_over_a_function_limit(target: Target) -> None:
    # A generator body: httpx sends Transfer-Encoding: chunked and no Content-Length.
    r = invoke(target.server, "small", content=chunks(b"a" * (SMALL_LIMIT + 1), 100))
    assert_error(r, 413, "payload_too_large")
    r = invoke(target.server, "small", content=chunks(b"b" * SMALL_LIMIT, 100))
    assert r.status_code == 200 and echoed(r.content).body == b"b" * SMALL_LIMIT
    target.steady()


def test_raw_chunked_body_without_content_length(target: Target) -> None:
    chunk = b"c" * 600
    req = (
        b"POST /api/v1/edge/small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        + b"%x\r\n%s\r\n" % (len(chunk), chunk) * 2
        + b"0\r\n\r\n"
    )
    out = target.raw(req)
    assert statuses(out) == [413]
    assert b'"error":"payload_too_large"' in out
    target.steady()


def test_body_over_the_default_limit(target: Target) -> None:
    big = b"z" * (DEFAULT_LIMIT + 1)
    body = assert_error(invoke(target.server, "steady", content=big), 413, "payload_too_large")
    assert body["limit"] == DEFAULT_LIMIT
    assert_error(invoke(target.server, "steady", content=chunks(big, 256 * 1024)), 413, "payload_too_large")
    target.steady()


def test_invalid_content_length_values(target: Target) -> None:
    before = target.canary_calls()
    for cl in (b"-1", b"+5", b"5x", b"99999999999999999999999", b"0x10"):
        out = target.raw(
            b"POST /api/v1/edge/canary HTTP/1.1\r\nHost: x\r\nContent-Length: "
            + cl
            + b"\r\nConnection: close\r\n\r\nhello"
        )
        assert statuses(out) == [400], (cl, out[:200])
    target.steady()
    assert target.canary_calls() == before


# --- headers ---


def test_a_100_kb_header_is_refused(target: Target) -> None:
    before = target.canary_calls()
    out = target.raw(
        b"GET /api/v1/edge/canary HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 100_000 + b"\r\nConnection: close\r\n\r\n"
    )
    got = statuses(out)
    assert len(got) == 1 and 400 <= got[0] < 500, out[:300]
    target.steady()
    assert target.canary_calls() == before


def test_two_thousand_headers_are_refused(target: Target) -> None:
    before = target.canary_calls()
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(2000))
    out = target.raw(b"GET /api/v1/edge/canary HTTP/1.1\r\nHost: x\r\n" + headers + b"Connection: close\r\n\r\n")
    got = statuses(out)
    assert len(got) == 1 and 400 <= got[0] < 500, out[:300]
    target.steady()
    assert target.canary_calls() == before


def test_header_values_with_invalid_utf8_reach_the_guest_intact(target: Target) -> None:
    out = target.raw(
        b"GET /api/v1/edge/echo HTTP/1.1\r\nHost: x\r\nX-Bin: \xff\xfe\x80 caf\xe9\r\nConnection: close\r\n\r\n"
    )
    assert statuses(out) == [200]
    envelope = out.split(b"\r\n\r\n", 1)[1]
    assert (b"x-bin", b"\xff\xfe\x80 caf\xe9") in echoed(envelope).headers
    target.steady()


@pytest.mark.parametrize(
    "header",
    [
        b"X-\xff: v",  # not a token
        b"X-A: a\x00b",  # NUL
        b"X-A: a\rb",  # a bare CR
        b"X-A: a\r\n b",  # obsolete line folding
        b"X A: v",  # a space in the name
        b": v",  # no name
    ],
)
def test_malformed_headers_are_refused(target: Target, header: bytes) -> None:
    before = target.canary_calls()
    out = target.raw(b"GET /api/v1/edge/canary HTTP/1.1\r\nHost: x\r\n" + header + b"\r\nConnection: close\r\n\r\n")
    assert statuses(out) == [400], out[:200]
    target.steady()
    assert target.canary_calls() == before


# --- paths ---


def test_invalid_utf8_in_the_path_is_refused(target: Target) -> None:
    before = target.canary_calls()
    for path in (b"/api/v1/edge/\xff", b"/functions/v1/canary/\xff\xfe", b"/api/v1/edge/canary?q=\xff"):
        out = target.raw(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        got = statuses(out)
        assert len(got) == 1 and 400 <= got[0] < 500, (path, out[:200])
    target.steady()
    assert target.canary_calls() == before


def test_percent_encoded_invalid_utf8_reaches_the_guest_raw(target: Target) -> None:
    r = fresh(target.server, "GET", "/functions/v1/echo/%ff%fe/x?q=%ff")
    assert r.status_code == 200, r.text
    req = echoed(r.content)
    assert (req.path, req.query) == (b"/functions/v1/echo/%ff%fe/x", b"q=%ff")
    target.steady()


# --- request smuggling ---

HIDDEN = b"GET /api/v1/edge/canary HTTP/1.1\r\nHost: x\r\n\r\n"


@pytest.mark.parametrize(
    "framing",
    [
        # Both framings: the front end and the back end might disagree on where the body ends.
        b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" % (5 + len(HIDDEN)) + HIDDEN,
        b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n0\r\n\r\n" + HIDDEN,
        # Two Content-Lengths, different and equal.
        b"Content-Length: 0\r\nContent-Length: %d\r\n\r\n" % len(HIDDEN) + HIDDEN,
        b"Content-Length: %d\r\nContent-Length: %d\r\n\r\n" % (len(HIDDEN), len(HIDDEN)) + HIDDEN,
        # Transfer-Encodings a lenient parser might ignore.
        b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n" + HIDDEN,
        b"Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n" + HIDDEN,
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + HIDDEN,
        b"Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n" + HIDDEN,
        # A chunk size that overflows.
        b"Transfer-Encoding: chunked\r\n\r\nfffffffffffffffffffff\r\n" + HIDDEN + b"\r\n0\r\n\r\n",
    ],
    ids=[
        "cl-te",
        "te-cl",
        "cl-cl-differ",
        "cl-cl-equal",
        "te-xchunked",
        "te-space",
        "te-twice",
        "te-identity",
        "chunk-overflow",
    ],
)
def test_smuggling_attempts_are_refused(target: Target, framing: bytes) -> None:
    before = target.canary_calls()
    out = target.raw(b"POST /api/v1/edge/steady HTTP/1.1\r\nHost: x\r\n" + framing)
    assert statuses(out) == [400], out[:300]
    target.steady()
    assert target.canary_calls() == before  # the hidden request never ran


def test_bare_lf_line_endings_are_refused(target: Target) -> None:
    before = target.canary_calls()
    out = target.raw(b"GET /api/v1/edge/canary HTTP/1.1\nHost: x\nConnection: close\n\n")
    assert statuses(out) == [400]
    target.steady()
    assert target.canary_calls() == before


def test_pipelined_requests_are_answered_in_order(target: Target) -> None:
    """The positive control for the canary: two well-framed requests on one connection both run."""
    before = target.canary_calls()
    out = target.raw(
        b"POST /api/v1/edge/steady HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
        b"GET /api/v1/edge/canary HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    assert statuses(out) == [200, 200]
    assert out.index(b"steady") < out.index(b"canary")
    assert target.canary_calls() == before + 1


def test_client_that_disconnects_mid_body_is_not_a_server_error(target: Target) -> None:
    size_before = target.server.log_path.stat().st_size
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", target.port), timeout=10) as c:
            c.sendall(b"POST /api/v1/edge/steady HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\nonly a little")
            # Closing now leaves the server waiting for 99,987 more bytes.
    # Both workers answer a request sent after the disconnects, so they have seen them.
    seen: set[int] = set()

    def every_worker_answered() -> bool:
        seen.add(fresh(target.server, "GET", "/healthz").json()["pid"])
        return seen == target.server.worker_pids()

    poll(every_worker_answered, what="an answer from every worker")
    target.steady()
    grew = target.server.log_path.read_bytes()[size_before:].decode(errors="replace")
    assert "Traceback" not in grew and "unhandled error" not in grew, grew[-3000:]


def test_a_client_chosen_request_id_cannot_amplify_the_logs(target: Target) -> None:
    """x-request-id is copied into every log line the guest writes: a long one must not multiply the
    log volume of a chatty function (1,024 lines a call) by its length."""
    rid = "r" * 50_000
    server_log = target.server.log_path
    function_log_file = target.server.data_dir / "logs" / "functions.jsonl"
    before = server_log.stat().st_size, function_log_file.stat().st_size
    r = invoke(target.server, "chatty", headers={"x-request-id": rid})
    assert (r.status_code, r.content) == (200, b"done")
    grew = server_log.stat().st_size - before[0], function_log_file.stat().st_size - before[1]
    bound = 1024 * 300 + 2 * len(rid)  # the lines with their framing, and the id once or twice
    assert grew[0] <= bound and grew[1] <= bound, f"server log +{grew[0]} bytes, function log +{grew[1]} bytes"
    target.steady()
