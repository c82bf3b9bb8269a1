"""Responses as (status, headers, body), for every transport: errors and guest answers.

A leaf: it imports no starlette, wasmtime or LMDB. The invocation core (hive.invoke), the Starlette
app and the HTTP fast path all render through it, so an error looks the same whichever way it went.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from hive.abi import Headers
from hive.abi import Response as GuestResponse
from hive.errors import HiveError

log = logging.getLogger("hive.app")

_JSON = b"application/json"


@dataclass(slots=True)
class Reply:
    """What goes back to the client. `headers` are complete (content-length included); `close` asks
    the transport to end the connection after it (an unexpected server error)."""

    status: int
    headers: Headers
    body: bytes
    close: bool = False


def bodyless(status: int) -> bool:
    """1xx, 204 and 304 never carry a body (RFC 9110 6.4.1)."""
    return status < 200 or status in (204, 304)


def guest_reply(resp: GuestResponse) -> Reply:
    """A guest's checked response (hive.abi refuses 1xx and bad headers). A 204 or 304 loses its body
    and length: a body there would be read as the answer to the client's next request."""
    if bodyless(resp.status):
        return Reply(resp.status, resp.headers, b"")
    body = resp.body
    return Reply(resp.status, [*resp.headers, (b"content-length", str(len(body)).encode())], body)


def json_reply(status: int, content: Any, headers: dict[str, str] | None = None) -> Reply:
    """JSON the way Starlette's JSONResponse writes it (same bytes, same header order)."""
    body = json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None, separators=(",", ":")).encode()
    raw = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    raw += [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON)]
    return Reply(status, raw, body)


def error_reply(exc: HiveError, method: str = "", path: str = "") -> Reply:
    if exc.status >= 500:
        log.warning("%s %s -> %d %s: %s", method, path, exc.status, exc.code, exc.message)
    headers = exc.headers
    if exc.status == 401 and "www-authenticate" not in headers:
        headers = {**headers, "www-authenticate": f'Bearer error="{exc.code}"'}
    return json_reply(exc.status, exc.to_dict(), headers)


def internal_error_reply(method: str = "", path: str = "") -> Reply:
    """The 500 for an unexpected exception; call it in the except block (it logs the traceback)."""
    log.exception("unhandled error on %s %s", method, path)
    reply = json_reply(500, {"error": "internal_error", "message": "internal server error"})
    reply.close = True
    return reply
