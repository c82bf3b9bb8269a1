"""A real upstream HTTP/1.1 server on 127.0.0.1 for outbound fetch tests: asyncio, in a thread of its
own, so hundreds of slow requests at once cost it nothing (a thread per request would)."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.parse
from collections.abc import Iterator

import pytest

_REASONS = {200: "OK", 302: "Found", 404: "Not Found", 500: "Internal Server Error"}


class Upstream:
    def __init__(self) -> None:
        self.hits = 0
        self.gathering: dict[str, asyncio.Event] = {}  # /gather: id -> set once n requests arrived
        self.arrived: dict[str, int] = {}
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.port = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024))
        self.port = server.sockets[0].getsockname()[1]
        self.ready.set()
        self.loop.run_forever()
        server.close()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:  # keep-alive
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                status, ctype, out, extra = await self._route(method, target, headers, body)
                self.hits += 1
                hdrs = {"content-type": ctype, "content-length": str(len(out)), **extra}
                writer.write(
                    f"HTTP/1.1 {status} {_REASONS.get(status, 'X')}\r\n".encode()
                    + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items()).encode()
                    + b"\r\n"
                    + out
                )
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _route(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes, dict[str, str]]:
        url = urllib.parse.urlsplit(target)
        q = dict(urllib.parse.parse_qsl(url.query))
        if url.path == "/json":
            return 200, "application/json", json.dumps({"rate": 1.08, "n": self.hits}).encode(), {}
        if url.path == "/slow":
            await asyncio.sleep(int(q.get("ms", "200")) / 1000)  # the upstream's own pace
            return 200, "text/plain", b"slow", {}
        if url.path == "/gather":  # answers once n requests with this id are all waiting here (or after 5 s)
            key, n = q["id"], int(q["n"])
            event = self.gathering.setdefault(key, asyncio.Event())
            self.arrived[key] = self.arrived.get(key, 0) + 1
            if self.arrived[key] >= n:
                event.set()
            try:
                await asyncio.wait_for(event.wait(), 5)
                return 200, "text/plain", b"gathered", {}
            except TimeoutError:
                return 200, "text/plain", f"only {self.arrived[key]} of {n}".encode(), {}
        if url.path == "/big":
            return 200, "application/octet-stream", b"b" * int(q["n"]), {}
        if url.path == "/echo":
            doc = {"method": method, "headers": headers, "body": body.decode("latin-1")}
            return 200, "application/json", json.dumps(doc).encode(), {}
        if url.path == "/redirect":
            return 302, "text/plain", b"", {"location": q["to"]}
        if url.path == "/fail":
            return 500, "application/json", b'{"error":"upstream"}', {}
        return 404, "application/json", b"{}", {}


@pytest.fixture(scope="session")
def upstream() -> Iterator[str]:
    up = Upstream()
    up.thread.start()
    assert up.ready.wait(10)
    yield f"http://127.0.0.1:{up.port}"
    up.stop()
