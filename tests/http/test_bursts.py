"""Bursts of short connections (one request each, as a client without a pool sends them), on the
real HTTP front in this process (uvicorn with workers.fastpath's protocol, uvloop, a real socket, a
real guest).

Each connection is answered: those opened in one loop turn beyond hive.pacing.PER_TURN are read from
a later turn on, and none may stay paused. Each is freed by reference counting: its protocol, cycle,
transport and invocation used to stay in a reference cycle, and the collector then walked thousands
of them at once while every other request waited.
"""

from __future__ import annotations

import gc
import socket
import threading
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
import uvloop

from hive.app import create_app
from hive.pacing import PER_TURN
from hive.settings import Settings
from tests.guests import const_wat, wat
from tests.support import ADMIN_TOKEN, free_port, poll
from workers.fastpath import FastHttpProtocol


@pytest.fixture
def front(settings: Settings) -> Iterator[int]:
    port = free_port()
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=FastHttpProtocol, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: uvloop.run(server.serve()), daemon=True)
    thread.start()
    poll("the in-process server to start", lambda: server.started or not thread.is_alive(), timeout=30)
    assert server.started, "the in-process server did not start"
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(30)


def one_request(port: int, head: bytes, body: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(head + body)
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return data


def deploy(port: int, name: str, wasm: bytes) -> None:
    r = httpx.post(
        f"http://127.0.0.1:{port}/api/v1/edge/deploy",
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
        data={"function": name},
        files={"wasm": ("f.wasm", wasm, "application/wasm")},
        timeout=30,
    )
    assert r.status_code == 201, r.text


def live_protocols() -> int:
    return sum(1 for o in gc.get_objects() if type(o) is FastHttpProtocol)


def test_closed_connections_leave_no_reference_cycles(front: int) -> None:
    deploy(front, "const", wat(const_wat("hi")))
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        before = live_protocols()
        for _ in range(40):
            answer = one_request(front, b"GET /api/v1/edge/const HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"hi"), answer[:300]
        # the server's side of the last connection may still be closing: give its loop a moment
        try:
            poll("closed connections' protocols to be freed", lambda: live_protocols() <= before, timeout=5)
        except AssertionError:
            raise AssertionError("closed connections' protocols are kept alive by reference cycles") from None
    finally:
        if was:
            gc.enable()


def test_a_burst_of_new_connections_is_answered_in_full(front: int) -> None:
    deploy(front, "const", wat(const_wat("hi")))
    n = 4 * PER_TURN + 3
    conns = [socket.create_connection(("127.0.0.1", front), timeout=10) for _ in range(n)]
    try:
        for s in conns:  # every request before any answer is read: the server accepts them together
            s.sendall(b"GET /api/v1/edge/const HTTP/1.1\r\nhost: t\r\nconnection: close\r\n\r\n")
        answers = []
        for s in conns:
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            answers.append(data)
    finally:
        for s in conns:
            s.close()
    assert all(a.startswith(b"HTTP/1.1 200") and a.endswith(b"hi") for a in answers), [a[:60] for a in answers]
