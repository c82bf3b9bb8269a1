"""Rules on a request's head and body size, and request ids: one home for every route and transport.

The invocation core (hive.invoke) applies them to invoke requests, hive.app's RequestGuard to every
other route, and the HTTP fast path (workers/fastpath.py) takes its URL limit from here. A leaf.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator

from hive.errors import BadRequest, HeadersTooLarge, HiveError, PayloadTooLarge, UriTooLong

Headers = list[tuple[bytes, bytes]]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def head_error(
    headers: Headers, max_headers: int, max_header_bytes: int, url_bytes: int, max_url_bytes: int, http_11: bool
) -> HiveError | None:
    """What is wrong with a request's head, or None (see check_head)."""
    size = hosts = 0
    for k, v in headers:
        size += len(k) + len(v)
        if k == b"host":
            hosts += 1
    return check_head(len(headers), size, hosts, url_bytes, max_headers, max_header_bytes, max_url_bytes, http_11)


def check_head(
    count: int,
    size: int,
    hosts: int,
    url_bytes: int,
    max_headers: int,
    max_header_bytes: int,
    max_url_bytes: int,
    http_11: bool,
) -> HiveError | None:
    """Too many or too large headers (431), a URL over the limit (414), and for HTTP/1.1 a missing or
    repeated Host (400, RFC 9112 3.2); from facts the caller gathered in its own pass over the headers."""
    if url_bytes > max_url_bytes:
        return uri_too_long(max_url_bytes)
    if count > max_headers or size > max_header_bytes:
        return HeadersTooLarge(f"request headers exceed {max_headers} fields or {max_header_bytes} bytes")
    if http_11 and hosts != 1:
        return BadRequest(
            "an HTTP/1.1 request needs exactly one Host header" if hosts else "an HTTP/1.1 request needs a Host header"
        )
    return None


def uri_too_long(limit: int) -> UriTooLong:
    return UriTooLong(f"the request URL exceeds {limit} bytes (setting max_url_bytes)", limit=limit)


def check_content_length(cl: str | None, limit: int, what: str) -> None:
    """Refuse a declared Content-Length over `limit`."""
    if cl is not None:
        if not cl.isdigit():
            raise BadRequest("invalid Content-Length")
        if int(cl) > limit:
            raise PayloadTooLarge(f"{what} of {cl} bytes exceeds the limit of {limit} bytes", limit=limit)


def body_too_large(limit: int, what: str) -> PayloadTooLarge:
    """A body that grew past `limit` while it streamed in."""
    return PayloadTooLarge(f"{what} exceeds the limit of {limit} bytes", limit=limit)


def header(headers: Headers, name: bytes) -> str | None:
    for k, v in headers:
        if k == name:
            return v.decode("latin-1")
    return None


# --- request ids ---


def _request_ids() -> Iterator[str]:
    """16 hex digits from os.urandom, read 4 KiB at a time (one syscall per 512 ids, not per request)."""
    while True:
        block = os.urandom(4096).hex()
        for i in range(0, len(block), 16):
            yield block[i : i + 16]


_request_id_stream = _request_ids()
_request_id_lock = threading.Lock()


def _reset_request_ids() -> None:
    global _request_id_stream, _request_id_lock
    _request_id_stream, _request_id_lock = _request_ids(), threading.Lock()


os.register_at_fork(after_in_child=_reset_request_ids)  # a forked child never repeats its parent's ids


def new_request_id() -> str:
    with _request_id_lock:
        return next(_request_id_stream)


def request_id_of(given: str | None) -> str:
    """The client's X-Request-Id when it is short and plain (it is copied into every log line), else a new one."""
    return given if given is not None and _REQUEST_ID.fullmatch(given) else new_request_id()
