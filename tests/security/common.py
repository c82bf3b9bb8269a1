"""Helpers shared by the security tests: guest builders, fresh-connection requests, error and registry checks."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from hive.registry import Registry, check_integrity
from tests.guests import RESP, data, guest, packed
from tests.support import Server


def respond_u32(*exprs: str) -> str:
    """WAT that answers 200 with a body of one little-endian u32 per i32 expression."""
    stores = " ".join(f"(i32.store (i32.const {RESP + 12 + 4 * i}) {e})" for i, e in enumerate(exprs))
    return f"""(i32.store (i32.const {RESP}) (i32.const 200))
               (i32.store (i32.const {RESP + 4}) (i32.const 0))
               (i32.store (i32.const {RESP + 8}) (i32.const {4 * len(exprs)}))
               {stores}
               {packed(RESP, 12 + 4 * len(exprs))}"""


def const_guest(body: bytes, *fields: str, status: int = 200) -> bytes:
    raw = status.to_bytes(4, "little") + (0).to_bytes(4, "little") + len(body).to_bytes(4, "little") + body
    return guest(packed(RESP, len(raw)), data(RESP, raw), *fields)


def counting_guest(marker: bytes) -> bytes:
    """Counts its calls in a global and logs `marker` with hive.log on each one; answers the count."""
    return guest(
        f"""
    (global.set $n (i32.add (global.get $n) (i32.const 1)))
    (call $log (i32.const 1) (i32.const 64) (i32.const {len(marker)}))
    {respond_u32("(global.get $n)")}""",
        '(import "hive" "log" (func $log (param i32 i32 i32)))',
        "(global $n (mut i32) (i32.const 0))",
        data(64, marker),
    )


def _leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def with_data_segment(wasm: bytes, size: int, fill: int = 0xAB) -> bytes:
    """Append a data section with one active segment of `size` bytes at offset 0 (the module must have
    none). Building it in Python keeps 60 MB out of WAT."""
    segment = b"\x01" + b"\x00" + b"\x41\x00\x0b" + _leb(size) + bytes([fill]) * size  # memory 0, i32.const 0
    return wasm + b"\x0b" + _leb(len(segment)) + segment


def u32s(body: bytes) -> list[int]:
    return [int.from_bytes(body[i : i + 4], "little", signed=True) for i in range(0, len(body), 4)]


# --- requests ---


def fresh(server: Server, method: str, path: str, **kw: Any) -> httpx.Response:
    """One request on a new connection, so the kernel may hand it to any worker."""
    headers = {"connection": "close", **kw.pop("headers", {})}
    with server.client() as c:
        return c.request(method, path, headers=headers, **kw)


def invoke(server: Server, name: str, **kw: Any) -> httpx.Response:
    return fresh(server, "POST", f"/api/v1/edge/{name}", **kw)


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """A clear JSON error: the status, a stable code and a human message."""
    assert r.status_code == status, (status, code, r.status_code, r.text[:500])
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert body["error"] == code, body
    assert isinstance(body["message"], str) and body["message"], body
    return body


def healthy(server: Server) -> None:
    assert server.proc.poll() is None, "the server exited"
    r = fresh(server, "GET", "/healthz")
    assert r.status_code == 200 and r.json()["status"] == "ok", r.text


def function_log(server: Server, name: str, lines: int = 10_000) -> list[dict[str, Any]]:
    r = fresh(server, "GET", f"/api/v1/edge/{name}/logs", headers=server.admin, params={"lines": lines})
    assert r.status_code == 200, r.text
    return [json.loads(line) for line in r.text.splitlines() if line.strip()]


def poll(predicate: Any, timeout: float = 20, interval: float = 0.02, what: str = "condition") -> Any:
    """Call predicate until it returns a truthy value; fail after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(interval)  # polling interval, not a wait for an event


def check_registry(server: Server, expected: dict[str, int | None]) -> None:
    """Stop the server, then open its LMDB registry: consistent, with the expected versions current."""
    server.stop()
    reg = Registry(server.data_dir / "registry.lmdb")
    try:
        assert check_integrity(reg) == []
        for name, version in expected.items():
            cur = reg.current(name)
            got = None if cur is None else cur.version
            assert got == version, f"{name}: current version {got}, expected {version}"
    finally:
        reg.close()


@dataclass
class Pinger:
    """A light background client on one keep-alive connection: a request every ~20 ms to a function
    that must keep answering `expect` however hostile its neighbours are."""

    server: Server
    name: str
    expect: bytes
    results: list[tuple[int | None, bytes]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def _run(self) -> None:
        deadline = time.monotonic() + 300  # a hard stop, whatever happens
        with self.server.client() as c:
            while not self._stop.wait(0.02) and time.monotonic() < deadline:
                try:
                    r = c.post(f"/api/v1/edge/{self.name}")
                    self.results.append((r.status_code, r.content))
                except httpx.HTTPError as e:
                    self.results.append((None, repr(e).encode()))

    def start(self) -> Pinger:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)

    def failures(self) -> list[tuple[int | None, bytes]]:
        return [r for r in self.results if r != (200, self.expect)]


def chunks(data: bytes, size: int = 65536) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]
