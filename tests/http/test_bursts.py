"""Bursts of short connections: each is answered, and each is freed by reference counting.

Connections opened in the same loop turn beyond hive.pacing.PER_TURN are read from a later turn on
(workers.fastpath); none may stay paused.

A burst of short connections (one request each, as a client without a pool sends them) used to leave
every connection's protocol, cycle, transport and invocation in a reference cycle; the collector then
walked thousands of them at once while every other request waited. Here the real HTTP front
(uvicorn with workers.fastpath's protocol, uvloop, a real socket) serves a real guest in this process,
with the collector off, and no protocol object outlives its connection.
"""

from __future__ import annotations

import gc
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
import uvloop

from hive.app import create_app
from hive.pacing import PER_TURN
from hive.settings import Settings
from tests.guests import const_wat, wat
from tests.support import ADMIN_TOKEN, free_port
from workers.fastpath import FastHttpProtocol


@pytest.fixture
def front(settings: Settings) -> Iterator[int]:
    port = free_port()
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, http=FastHttpProtocol, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: uvloop.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the in-process server did not start"
        time.sleep(0.02)
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
    boundary = "hiveboundary"
    body = (
        (
            f'--{boundary}\r\ncontent-disposition: form-data; name="function"\r\n\r\n{name}\r\n'
            f'--{boundary}\r\ncontent-disposition: form-data; name="wasm"; filename="f.wasm"\r\n'
            "content-type: application/wasm\r\n\r\n"
        ).encode()
        + wasm
        + f"\r\n--{boundary}--\r\n".encode()
    )
    head = (
        f"POST /api/v1/edge/deploy HTTP/1.1\r\nhost: t\r\nconnection: close\r\n"
        f"authorization: Bearer {ADMIN_TOKEN}\r\ncontent-type: multipart/form-data; boundary={boundary}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    ).encode()
    answer = one_request(port, head, body)
    assert answer.startswith(b"HTTP/1.1 201"), answer[:300]


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
        deadline = time.monotonic() + 5
        while live_protocols() > before and time.monotonic() < deadline:
            time.sleep(0.02)
        assert live_protocols() <= before, "closed connections' protocols are kept alive by reference cycles"
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
