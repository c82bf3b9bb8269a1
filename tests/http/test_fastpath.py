"""HTTP/1.1 on the invoke fast path (workers/fastpath.py), with raw sockets against a real server.

The fast path answers `/api/v1/edge/{name}` and `/functions/v1/{name}...` from uvicorn's parser
callbacks; anything with a percent-escape in its target goes through Starlette as before. So
`/api/v1/edge/%63onst` reaches the same function as `/api/v1/edge/const` through the Starlette route,
which lets these tests compare the two paths response for response, on the same server."""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from hive import abi
from tests.guests import ECHO_WAT, LOOP_WAT, TRAP_WAT, const_wat, wat
from tests.support import Server, poll, start_server

pytestmark = pytest.mark.slow

KEY = "k" * 24
IDLE_S = 5  # gunicorn's keepalive (workers/gunicorn_conf.py): how long a stalled request may stay silent


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("http") / "data", workers=1)
    deploys = [
        ("const", wat(const_wat("steady")), None),
        ("echo", wat(ECHO_WAT), None),
        ("small", wat(const_wat("small")), {"limits": {"max_request_bytes": 100}}),
        ("trap", wat(TRAP_WAT), None),
        ("spin", wat(LOOP_WAT), {"limits": {"timeout_ms": 60}}),
        ("keyed", wat(const_wat("keyed")), {"auth": {"mode": "api_key", "api_keys": [KEY]}}),
        ("limited", wat(const_wat("limited")), {"rate_limit": {"rps": 0.01, "burst": 1}}),
        ("odd", wat(const_wat("odd", status=299)), None),
    ]
    for name, wasm, manifest in deploys:
        r = s.deploy(name, wasm, json.dumps(manifest) if manifest else None)
        assert r.status_code == 201, r.text
    yield s
    s.stop()


# --- a raw HTTP/1.1 client ---


class Conn:
    def __init__(self, server: Server, timeout: float = 10) -> None:
        host, port = server.url.removeprefix("http://").split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Conn:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def _fill(self) -> bool:
        chunk = self.sock.recv(65536)
        self.buf += chunk
        return bool(chunk)

    def closed_by_server(self) -> bool:
        """True when the server closed the connection (after any buffered bytes)."""
        try:
            return not self.buf and not self._fill()
        except ConnectionResetError:
            return True

    def response(self, head: bool = False) -> tuple[int, list[tuple[str, str]], bytes]:
        while b"\r\n\r\n" not in self.buf:
            if not self._fill():
                raise ConnectionError(f"closed before a response; got {self.buf!r}")
        raw, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = raw.decode("latin-1").split("\r\n")
        status = int(lines[0].split(" ")[1])
        assert lines[0].startswith("HTTP/1.1 ")
        headers = [(k.strip().lower(), v.strip()) for k, _, v in (line.partition(":") for line in lines[1:])]
        n = 0 if head or status in (100, 204, 304) else int(dict(headers).get("content-length", "0"))
        while len(self.buf) < n:
            if not self._fill():
                raise ConnectionError("closed in the middle of a body")
        body, self.buf = self.buf[:n], self.buf[n:]
        return status, headers, body


def req(
    method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None, version: str = "HTTP/1.1"
) -> bytes:
    h = {"Host": "test", **(headers or {})}
    if body and "Transfer-Encoding" not in h:
        h.setdefault("Content-Length", str(len(body)))
    return (
        f"{method} {target} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
    ).encode() + body


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


def without_date(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    return [h for h in headers if h[0] != "date"]


def exchange(server: Server, data: bytes, head: bool = False) -> tuple[int, list[tuple[str, str]], bytes]:
    with Conn(server) as c:
        c.send(data)
        return c.response(head)


def escaped(name: str) -> str:
    """The same function through Starlette: a percent-escape sends the request down the ASGI path."""
    return "%" + format(ord(name[0]), "02x") + name[1:]


def envelope_body(resp_body: bytes) -> abi.Request:
    return abi.decode_request(resp_body)


# --- the tests ---


def test_keep_alive_reuses_one_connection(server: Server) -> None:
    with Conn(server) as c:
        for i in range(50):
            c.send(req("POST", "/api/v1/edge/echo", b"n=%d" % i))
            status, headers, body = c.response()
            assert status == 200 and envelope_body(body).body == b"n=%d" % i
            assert ("connection", "close") not in headers


def test_pipelined_requests_are_answered_in_order(server: Server) -> None:
    batch = [
        req("POST", "/api/v1/edge/echo", b"first"),
        req("GET", "/healthz"),  # Starlette, between two fast ones
        req("POST", "/api/v1/edge/echo?q=2", b"second"),
        req("POST", "/api/v1/edge/nothing-here"),
        req("POST", "/api/v1/edge/echo", chunked(b"thi", b"rd"), {"Transfer-Encoding": "chunked"}),
        req("POST", "/api/v1/edge/spin"),  # runs into its time limit (off the loop after the first)
        req("POST", "/functions/v1/echo/deep/path", b"fourth"),
        req("POST", f"/api/v1/edge/{escaped('echo')}", b"fifth"),
        req("POST", "/api/v1/edge/const"),
    ]
    with Conn(server) as c:
        c.send(b"".join(batch))
        got = [c.response() for _ in batch]
    statuses = [g[0] for g in got]
    assert statuses == [200, 200, 200, 404, 200, 504, 200, 200, 200]
    assert envelope_body(got[0][2]).body == b"first"
    assert json.loads(got[1][2])["status"] == "ok"
    second = envelope_body(got[2][2])
    assert (second.body, second.query) == (b"second", b"q=2")
    assert json.loads(got[3][2])["error"] == "function_not_found"
    assert envelope_body(got[4][2]).body == b"third"
    assert json.loads(got[5][2])["error"] == "timeout"
    fourth = envelope_body(got[6][2])
    assert (fourth.body, fourth.path) == (b"fourth", b"/functions/v1/echo/deep/path")
    assert envelope_body(got[7][2]).body == b"fifth"
    assert got[8][2] == b"steady"


def test_many_pipelined_requests_in_one_write(server: Server) -> None:
    n = 400  # more than Python's recursion limit would allow if each answer started the next
    with Conn(server) as c:
        c.send(b"".join(req("POST", "/api/v1/edge/echo", b"%d" % i) for i in range(n)))
        bodies = [envelope_body(c.response()[2]).body for _ in range(n)]
    assert bodies == [b"%d" % i for i in range(n)]


def test_chunked_request_body(server: Server) -> None:
    parts = [os.urandom(1000) for _ in range(7)] + [b"", b"end"][1:]
    with Conn(server) as c:
        c.send(req("POST", "/api/v1/edge/echo", headers={"Transfer-Encoding": "chunked"}))
        for p in parts:  # arriving in separate packets
            c.send(b"%x\r\n%s\r\n" % (len(p), p))
            time.sleep(0.01)
        c.send(b"0\r\n\r\n")
        status, _, body = c.response()
    assert status == 200 and envelope_body(body).body == b"".join(parts)


@pytest.mark.parametrize("how", ["content-length", "chunked"])
def test_a_body_over_the_limit_is_413_json_like_starlette(server: Server, how: str) -> None:
    big = b"x" * 101
    for target in ("/api/v1/edge/small", f"/api/v1/edge/{escaped('small')}"):
        if how == "chunked":
            data = req("POST", target, chunked(big[:60], big[60:]), {"Transfer-Encoding": "chunked"})
        else:
            data = req("POST", target, big)
        with Conn(server) as c:
            c.send(data + req("POST", "/api/v1/edge/const"))  # and the connection goes on
            status, headers, body = c.response()
            after = c.response()
        assert status == 413 and after[0] == 200 and after[2] == b"steady"
        assert dict(headers)["content-type"] == "application/json"
        err = json.loads(body)
        assert err["error"] == "payload_too_large" and err["limit"] == 100
        if target.endswith("/small"):
            fast = (status, without_date(headers), body)
        else:
            assert (status, without_date(headers), body) == fast  # the same bytes both ways
    # A body at the limit passes.
    assert exchange(server, req("POST", "/api/v1/edge/small", b"y" * 100))[0] == 200


ERRORS = [
    ("POST", "nothing-here", {}, 404, "function_not_found"),
    ("POST", "keyed", {}, 401, "missing_credentials"),
    ("POST", "keyed", {"apikey": "wrong-wrong-wrong-wrong"}, 401, "invalid_api_key"),
    ("POST", "trap", {}, 502, "trap"),
    ("POST", "spin", {}, 504, "timeout"),
    ("POST", "small", {"Content-Length": "nope"}, 400, None),  # httptools refuses it: uvicorn's 400
    ("GET", "const", {f"x-h{i}": "v" for i in range(120)}, 431, "headers_too_large"),
]


@pytest.mark.parametrize("method, name, headers, status, code", ERRORS, ids=[e[4] or "bad-cl" for e in ERRORS])
def test_errors_are_the_same_as_the_starlette_path(
    server: Server, method: str, name: str, headers: dict[str, str], status: int, code: str | None
) -> None:
    fast = exchange(server, req(method, f"/api/v1/edge/{name}", headers=headers))
    slow = exchange(server, req(method, f"/api/v1/edge/{escaped(name)}", headers=headers))
    assert fast[0] == slow[0] == status
    assert without_date(fast[1]) == without_date(slow[1])
    if code is None:
        assert fast[2] == slow[2]
        return
    f, s = json.loads(fast[2]), json.loads(slow[2])
    assert f == s and f["error"] == code and f["message"]


def test_rate_limit_429_matches_too(server: Server) -> None:
    first = exchange(server, req("POST", "/api/v1/edge/limited"))
    fast = exchange(server, req("POST", "/api/v1/edge/limited"))
    slow = exchange(server, req("POST", f"/api/v1/edge/{escaped('limited')}"))
    assert first[0] == 200 and fast[0] == slow[0] == 429
    assert without_date(fast[1]) == without_date(slow[1]) and fast[2] == slow[2]
    assert dict(fast[1])["retry-after"]


def test_auth_passes_with_the_key(server: Server) -> None:
    assert exchange(server, req("POST", "/api/v1/edge/keyed", headers={"x-api-key": KEY}))[2] == b"keyed"
    assert (
        exchange(server, req("POST", "/api/v1/edge/keyed", headers={"Authorization": f"Bearer {KEY}"}))[2] == b"keyed"
    )


def test_guest_responses_are_the_same_bytes_both_ways(server: Server) -> None:
    for name in ("const", "odd"):
        fast = exchange(server, req("POST", f"/api/v1/edge/{name}"))
        slow = exchange(server, req("POST", f"/api/v1/edge/{escaped(name)}"))
        assert (fast[0], without_date(fast[1]), fast[2]) == (slow[0], without_date(slow[1]), slow[2])
    assert exchange(server, req("POST", "/api/v1/edge/odd"))[0] == 299


def test_connection_close_is_honoured(server: Server) -> None:
    with Conn(server) as c:
        c.send(req("POST", "/api/v1/edge/const", headers={"Connection": "close"}))
        status, headers, body = c.response()
        assert status == 200 and body == b"steady" and ("connection", "close") in headers
        assert c.closed_by_server()


def test_http_1_0_closes_after_the_response(server: Server) -> None:
    with Conn(server) as c:
        c.send(req("POST", "/api/v1/edge/const", version="HTTP/1.0"))
        status, headers, body = c.response()
        assert status == 200 and body == b"steady" and ("connection", "close") in headers
        assert c.closed_by_server()


def test_head_sends_headers_only(server: Server) -> None:
    with Conn(server) as c:
        c.send(req("HEAD", "/api/v1/edge/const"))
        status, headers, body = c.response(head=True)
        assert status == 200 and body == b"" and dict(headers)["content-length"] == "6"
        c.send(req("POST", "/api/v1/edge/const"))  # nothing of a body was left on the wire
        assert c.response()[2] == b"steady"
    slow = exchange(server, req("HEAD", f"/api/v1/edge/{escaped('const')}"), head=True)
    assert (slow[0], without_date(slow[1])) == (status, without_date(headers))


def test_expect_100_continue(server: Server) -> None:
    with Conn(server) as c:
        c.send(req("POST", "/api/v1/edge/echo", headers={"Expect": "100-continue", "Content-Length": "5"}))
        assert c.response(head=True)[0] == 100
        c.send(b"hello")
        status, _, body = c.response()
    assert status == 200 and envelope_body(body).body == b"hello"


def test_a_stalled_half_request_is_timed_out_without_blocking_others(server: Server) -> None:
    with Conn(server, timeout=IDLE_S * 4) as stalled_headers, Conn(server, timeout=IDLE_S * 4) as stalled_body:
        stalled_headers.send(b"POST /api/v1/edge/const HTTP/1.1\r\nHost: test\r\nContent-Le")
        stalled_body.send(req("POST", "/api/v1/edge/echo", headers={"Content-Length": "100"}) + b"only part")
        # Everyone else is served while both stalled connections are still open.
        for _ in range(20):
            assert exchange(server, req("POST", "/api/v1/edge/const"))[2] == b"steady"
        for c in (stalled_headers, stalled_body):
            c.sock.setblocking(False)
            with pytest.raises(BlockingIOError):
                c.sock.recv(1)  # still open, nothing sent to it
            c.sock.setblocking(True)
            c.sock.settimeout(IDLE_S * 4)
        # Then the server gives up on them (a socket timeout of 4x the idle limit bounds the wait).
        assert stalled_headers.closed_by_server() and stalled_body.closed_by_server()


def test_a_dripping_client_is_cut_off_at_the_header_deadline(server: Server) -> None:
    """Each header line comes well inside the idle limit, but the headers never end."""
    from workers.fastpath import HEADER_TIMEOUT_S

    closed = False
    with Conn(server, timeout=HEADER_TIMEOUT_S * 3) as c:
        c.send(b"POST /api/v1/edge/const HTTP/1.1\r\n")
        for _ in range(int(HEADER_TIMEOUT_S * 2)):  # one line a second, for twice the deadline
            try:
                c.send(b"X-Drip: 1\r\n")
            except OSError:
                closed = True
                break
            time.sleep(1)
        closed = closed or c.closed_by_server()
    assert closed


def test_a_long_running_function_does_not_hold_up_the_others(server: Server) -> None:
    r = server.deploy("slow", wat(LOOP_WAT), json.dumps({"limits": {"timeout_ms": 1500}}))
    assert r.status_code == 201, r.text
    assert exchange(server, req("POST", "/api/v1/edge/slow"))[0] == 504  # seen to run long: off the loop now
    results: list[int] = []
    t = threading.Thread(target=lambda: results.append(exchange(server, req("POST", "/api/v1/edge/slow"))[0]))
    t.start()
    time.sleep(0.2)  # let it reach the worker (not a measurement)
    with Conn(server) as c:
        c.send(req("GET", "/healthz"))
        c.response()
        for _ in range(20):
            c.send(req("POST", "/api/v1/edge/const"))
            assert c.response()[2] == b"steady"
    assert t.is_alive() and results == [], "the quick requests waited for the long-running one"
    t.join()
    assert results == [504]


def test_the_drain_says_connection_close_during_a_reload(server: Server) -> None:
    """SIGHUP: the old worker hands over to the new one, then drains; a keep-alive client on it
    gets its next answer with Connection: close, and nothing fails."""
    with Conn(server) as c:
        c.send(req("POST", "/api/v1/edge/const"))
        assert c.response()[2] == b"steady"
        old = server.worker_pids()
        os.kill(server.proc.pid, signal.SIGHUP)
        answers = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            c.send(req("POST", "/api/v1/edge/const"))
            status, headers, body = c.response()
            answers.append((status, body, ("connection", "close") in headers))
            if answers[-1][2]:
                break
            time.sleep(0.02)
        assert all(a[:2] == (200, b"steady") for a in answers), answers
        assert answers[-1][2], "no Connection: close while the old worker drained"
        assert c.closed_by_server()
    poll("the old worker gone", lambda: not set(old) & server.worker_pids())
    server.wait_ready(1)
    assert exchange(server, req("POST", "/api/v1/edge/const"))[2] == b"steady"
    # The hand-over marks: only the live worker's is left.
    marks = {p.name for p in (server.data_dir / "run").glob("worker-*.ready")}
    assert marks == {f"worker-{pid}.ready" for pid in server.worker_pids()}


def test_an_escaped_query_reaches_the_guest_as_sent(server: Server) -> None:
    fast = exchange(server, req("GET", "/api/v1/edge/echo?q=a%20b&r=%2F"))
    slow = exchange(server, req("GET", f"/api/v1/edge/{escaped('echo')}?q=a%20b&r=%2F"))
    assert envelope_body(fast[2]).query == envelope_body(slow[2]).query == b"q=a%20b&r=%2F"


def test_idle_connections_close_after_keepalive_and_busy_ones_stay(server: Server) -> None:
    with (
        Conn(server, timeout=IDLE_S * 4) as idle,
        Conn(server, timeout=IDLE_S * 4) as silent,
        Conn(server, timeout=IDLE_S * 4) as busy,
    ):
        idle.send(req("POST", "/api/v1/edge/const"))
        assert idle.response()[2] == b"steady"
        for _ in range(IDLE_S + 3):  # a request a second on `busy`, for longer than the idle limit
            busy.send(req("POST", "/api/v1/edge/const"))
            assert busy.response()[2] == b"steady"
            time.sleep(1)
        assert idle.closed_by_server() and silent.closed_by_server()
        busy.send(req("POST", "/api/v1/edge/const"))  # still open
        assert busy.response()[2] == b"steady"
