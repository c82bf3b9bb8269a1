"""The Python floor for the comparison: a bare uvloop + httptools protocol with a handler equivalent to
functions/hello (parse the JSON body, greet `name`, add a UTC timestamp), no WebAssembly, no routing,
no limits, no metrics or logs. What any Python HTTP server pays before it does anything.

    python loadtests/bare_uvloop.py PORT
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import httptools
import uvloop


class Hello(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.parser = httptools.HttpRequestParser(self)
        self.body: list[bytes] = []

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        name = "World"
        try:
            parsed = json.loads(b"".join(self.body))
            if isinstance(parsed, dict) and isinstance(parsed.get("name"), str):
                name = parsed["name"]
        except ValueError:
            pass
        self.body = []
        out = json.dumps(
            {"message": f"Hello, {name}!", "timestamp": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        ).encode()
        self.transport.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(out), out)
        )


async def main(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Hello, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
