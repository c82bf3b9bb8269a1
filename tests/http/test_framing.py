"""HTTP framing on a real server, through both adapters of the invocation core (the fast path and the
Starlette route): byte-identical answers for one table of requests, no body where HTTP allows none
(a body there would answer the client's next request), one rule for guest headers, and bounded heads
and bodies (414, Host, the body deadline)."""

from __future__ import annotations

import json
import select
import time
from collections.abc import Iterator

import pytest

from hive import abi
from tests.guests import LOOP_WAT, RESP, TRAP_WAT, const_wat, data, guest, packed, wat
from tests.http.test_fastpath import Conn, escaped, exchange, req, without_date
from tests.support import Server, start_server

pytestmark = pytest.mark.slow

KEY = "k" * 24
FORGED = b"HTTP/1.1 200 OK\r\nset-cookie: session=stolen\r\ncontent-length: 6\r\n\r\nforged"


def answering(status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    """A guest whose every response is this envelope, as it is (the host checks it, not the guest)."""
    raw = abi.encode_response(abi.Response(status, headers, body))
    return guest(packed(RESP, len(raw)), data(RESP, raw), pages=1)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("framing") / "data", workers=1)
    deploys = [
        ("const", wat(const_wat("steady")), None),
        ("small", wat(const_wat("small")), {"limits": {"max_request_bytes": 100}}),
        ("keyed", wat(const_wat("keyed")), {"auth": {"mode": "api_key", "api_keys": [KEY]}}),
        ("limited", wat(const_wat("limited")), {"rate_limit": {"rps": 0.01, "burst": 1}}),
        ("trap", wat(TRAP_WAT), None),
        ("spin", wat(LOOP_WAT), {"limits": {"timeout_ms": 60}}),
        ("nocontent", answering(204, [(b"x-a", b"1")], FORGED), None),
        ("notmodified", answering(304, [(b"etag", b'"v1"')], FORGED), None),
        ("info", answering(100, [], b""), None),
        ("switch", answering(101, [(b"upgrade", b"websocket")], b""), None),
        ("ctl", answering(200, [(b"x-a", b"a\x01b")], b"x"), None),
        ("del", answering(200, [(b"x-a", b"a\x7fb")], b"x"), None),
        ("tab", answering(200, [(b"x-a", b"a\tb")], b"x"), None),
    ]
    for name, wasm, manifest in deploys:
        r = s.deploy(name, wasm, json.dumps(manifest) if manifest else None)
        assert r.status_code == 201, r.text
    exchange(s, req("POST", "/api/v1/edge/limited"))  # uses up the burst
    yield s
    s.stop()


TABLE = [
    ("good", "const", {}, b"", 200, None),
    ("oversized", "small", {}, b"x" * 101, 413, "payload_too_large"),
    ("unauthorized", "keyed", {}, b"", 401, "missing_credentials"),
    ("wrong-key", "keyed", {"apikey": "w" * 24}, b"", 401, "invalid_api_key"),
    ("rate-limited", "limited", {}, b"", 429, "rate_limited"),
    ("trap", "trap", {}, b"", 502, "trap"),
    ("timeout", "spin", {}, b"", 504, "timeout"),
    ("bad-guest-header", "ctl", {}, b"", 502, "abi_violation"),
    ("guest-1xx", "info", {}, b"", 502, "abi_violation"),
    ("missing", "nothing-here", {}, b"", 404, "function_not_found"),
]


@pytest.mark.parametrize("case, name, headers, body, status, code", TABLE, ids=[t[0] for t in TABLE])
def test_both_adapters_give_the_same_bytes(
    server: Server, case: str, name: str, headers: dict[str, str], body: bytes, status: int, code: str | None
) -> None:
    answers = []
    for target in (f"/api/v1/edge/{name}", f"/api/v1/edge/{escaped(name)}"):
        with Conn(server) as c:
            c.send(req("POST", target, body, headers) + req("POST", "/api/v1/edge/const"))
            got = c.response()
            assert c.response()[2] == b"steady", case  # the connection goes on after any of these
        answers.append((got[0], without_date(got[1]), got[2]))
    fast, slow = answers
    assert fast == slow, case
    assert fast[0] == status
    if code is not None:
        err = json.loads(fast[2])
        assert err["error"] == code and err["message"], err


@pytest.mark.parametrize("name, status", [("nocontent", 204), ("notmodified", 304)])
def test_no_body_where_http_allows_none(server: Server, name: str, status: int) -> None:
    """The guest put a whole forged response in its body; on keep-alive it must never reach the client."""
    for target in (f"/api/v1/edge/{name}", f"/api/v1/edge/{escaped(name)}"):
        with Conn(server) as c:
            c.send(req("GET", target) + req("GET", "/api/v1/edge/const"))
            first = c.response()
            second = c.response()
            assert first[0] == status and first[2] == b""
            assert "content-length" not in dict(first[1]) or status == 304
            assert second[0] == 200 and second[2] == b"steady"
            assert b"forged" not in c.buf and b"stolen" not in c.buf


def test_guest_header_rule_is_one_rule(server: Server) -> None:
    for name in ("ctl", "del"):
        fast = exchange(server, req("GET", f"/api/v1/edge/{name}"))
        slow = exchange(server, req("GET", f"/api/v1/edge/{escaped(name)}"))
        assert fast[0] == slow[0] == 502 and json.loads(fast[2])["error"] == "abi_violation"
        assert fast[2] == slow[2]
    status, headers, body = exchange(server, req("GET", "/api/v1/edge/tab"))  # HTAB is allowed in a value
    assert status == 200 and dict(headers)["x-a"] == "a\tb"


def test_a_guest_cannot_switch_protocols(server: Server) -> None:
    status, headers, body = exchange(server, req("GET", "/api/v1/edge/switch"))
    assert status == 502 and json.loads(body)["error"] == "abi_violation"
    assert "upgrade" not in dict(headers)


@pytest.mark.parametrize("target", ["/api/v1/edge/const?q=", "/api/v1/edge/deploy?q=", "/healthz?q="])
def test_a_url_over_the_limit_is_414(server: Server, target: str) -> None:
    with Conn(server) as c:
        c.send(req("GET", target + "a" * 9000))
        status, headers, body = c.response()
        assert status == 414 and json.loads(body)["error"] == "uri_too_long"
        assert json.loads(body)["limit"] == 8192
    assert exchange(server, req("GET", "/api/v1/edge/const?q=" + "a" * 4000))[0] == 200


def test_a_huge_url_is_refused_before_it_is_read(server: Server) -> None:
    """The answer comes while the client is still sending its URL; the server does not buffer it."""
    with Conn(server) as c:
        c.send(b"GET /api/v1/edge/const?q=")
        sent = 0
        for _ in range(4096):  # at most 64 MiB, in 16 KiB pieces
            try:
                c.send(b"a" * 16384)
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 16384
            if sent > (1 << 20):
                break
        status = c.response()[0]
    assert status == 414 and sent <= (1 << 20) + 16384
    assert exchange(server, req("GET", "/api/v1/edge/const"))[0] == 200


@pytest.mark.parametrize("target", ["/api/v1/edge/const", "/healthz"])
def test_http_11_needs_exactly_one_host(server: Server, target: str) -> None:
    no_host = f"GET {target} HTTP/1.1\r\n\r\n".encode()
    two = f"GET {target} HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".encode()
    for raw in (no_host, two):
        status, _, body = exchange(server, raw)
        assert status == 400 and json.loads(body)["error"] == "bad_request", body
    assert exchange(server, f"GET {target} HTTP/1.0\r\n\r\n".encode())[0] == 200  # HTTP/1.0 needs none


def test_a_trickled_body_is_cut_off_at_the_body_deadline(tmp_path) -> None:
    s = start_server(tmp_path / "data", workers=1, env={"HIVE_BODY_TIMEOUT_S": "2"})
    try:
        assert s.deploy("const", wat(const_wat("steady"))).status_code == 201
        with Conn(s, timeout=30) as c:
            c.send(req("POST", "/api/v1/edge/const", headers={"Content-Length": "40"}))
            started = time.monotonic()
            dripped = 0
            for _ in range(40):  # one byte every 0.5 s: never idle for keepalive (5 s), but 20 s in all
                try:
                    c.send(b"x")
                except (BrokenPipeError, ConnectionResetError):
                    break
                dripped += 1
                # meanwhile the worker serves others
                assert exchange(s, req("GET", "/api/v1/edge/const"))[2] == b"steady"
                time.sleep(0.5)  # the client's pace, not a wait for the server
                if select.select([c.sock], [], [], 0)[0] and c.closed_by_server():  # readable: closed, or data
                    break
            took = time.monotonic() - started
        assert dripped < 40, "the trickled body was never cut off"
        print(f"cut off after {dripped} bytes, {took:.1f} s")
    finally:
        s.stop()
