"""Guest ABI v1: the byte envelopes that carry a request into a guest and a response out.

Every integer is an unsigned 32-bit little-endian length or count. See docs/abi.md.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass, field

from hive.errors import AbiViolation, ResponseTooLarge

ABI_VERSION = 1
MARKER_EXPORT = "hive_abi_v1"
ALLOC_EXPORT = "hive_alloc"
FREE_EXPORT = "hive_free"
HANDLE_EXPORT = "hive_handle"
MEMORY_EXPORT = "memory"

MAX_RESPONSE_HEADERS = 256
MAX_HEADER_NAME = 256
MAX_HEADER_VALUE = 16 * 1024

_U32 = struct.Struct("<I")
_pack_u32 = _U32.pack
_unpack_u32 = _U32.unpack_from
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Any control character but HTAB (RFC 9110 5.5): NUL, CR and LF would split the response; the others are
# refused by HTTP stacks along the way.
_BAD_VALUE = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
# Framing is the server's job; a guest can't set these.
_HOP_BY_HOP = frozenset(
    {b"content-length", b"transfer-encoding", b"connection", b"keep-alive", b"upgrade", b"te", b"trailer"}
)

Headers = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Request:
    method: bytes
    path: bytes
    query: bytes = b""
    headers: Headers = field(default_factory=list)
    body: bytes = b""


@dataclass(slots=True)
class Response:
    status: int
    headers: Headers = field(default_factory=list)
    body: bytes = b""


def encode_request(method: bytes, path: bytes, query: bytes, headers: Headers, body: bytes) -> bytes:
    parts = [
        _pack_u32(len(method)),
        method,
        _pack_u32(len(path)),
        path,
        _pack_u32(len(query)),
        query,
        _pack_u32(len(headers)),
    ]
    append = parts.append
    for name, value in headers:
        append(_pack_u32(len(name)))
        append(name)
        append(_pack_u32(len(value)))
        append(value)
    append(_pack_u32(len(body)))
    append(body)
    return b"".join(parts)


def encode_response(resp: Response) -> bytes:
    parts = [_pack_u32(resp.status), _pack_u32(len(resp.headers))]
    for name, value in resp.headers:
        parts += [_pack_u32(len(name)), name, _pack_u32(len(value)), value]
    parts += [_pack_u32(len(resp.body)), resp.body]
    return b"".join(parts)


class Reader:
    __slots__ = ("buf", "pos", "end")

    def __init__(self, buf: bytes | memoryview) -> None:
        self.buf = buf
        self.pos = 0
        self.end = len(buf)

    def u32(self, what: str) -> int:
        if self.pos + 4 > self.end:
            raise AbiViolation(f"envelope truncated reading {what} at byte {self.pos}")
        (v,) = _unpack_u32(self.buf, self.pos)
        self.pos += 4
        return v

    def raw(self, n: int, what: str) -> bytes:
        if self.pos + n > self.end:
            raise AbiViolation(f"envelope truncated reading {what} at byte {self.pos}")
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def bytes(self, what: str, limit: int | None = None, over: type[AbiViolation] = AbiViolation) -> bytes:
        n = self.u32(what + " length")
        if limit is not None and n > limit:
            raise over(f"{what} length {n} exceeds the limit of {limit}")
        if self.pos + n > self.end:
            raise AbiViolation(f"{what} length {n} runs past the end of the envelope")
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out


def decode_request(buf: bytes | memoryview) -> Request:
    r = Reader(buf)
    method, path, query = r.bytes("method"), r.bytes("path"), r.bytes("query")
    count = r.u32("header count")
    headers = [(r.bytes("header name"), r.bytes("header value")) for _ in range(count)]
    body = r.bytes("body")
    if r.pos != r.end:
        raise AbiViolation(f"{r.end - r.pos} trailing bytes after the request envelope")
    return Request(method, path, query, headers, body)


def decode_response(buf: bytes | memoryview, max_body: int) -> Response:
    """Decode and validate a guest's response envelope. A guest can lie, so everything is checked.

    A straight-line decoder takes well-formed envelopes; anything it does not accept goes through
    the field-by-field decoder, which names what is wrong (the same checks, the same results)."""
    if type(buf) is bytes:
        resp = _decode_response_fast(buf, max_body)
        if resp is not None:
            return resp
    return _decode_response_checked(buf, max_body)


_unpack_2u32 = struct.Struct("<II").unpack_from
_token_fullmatch = _TOKEN.fullmatch
_bad_value_search = _BAD_VALUE.search


def _decode_response_fast(buf: bytes, max_body: int) -> Response | None:
    """The response, or None when anything is off (the checked decoder then says what)."""
    end = len(buf)
    if end < 12:
        return None
    status, count = _unpack_2u32(buf, 0)
    if not 200 <= status <= 599 or count > MAX_RESPONSE_HEADERS:
        return None
    pos = 8
    headers: Headers = []
    for _ in range(count):
        if pos + 4 > end:
            return None
        (n,) = _unpack_u32(buf, pos)
        pos += 4
        if n > MAX_HEADER_NAME or pos + n + 4 > end:
            return None
        name = buf[pos : pos + n].lower()
        pos += n
        (n,) = _unpack_u32(buf, pos)
        pos += 4
        if n > MAX_HEADER_VALUE or pos + n > end:
            return None
        value = buf[pos : pos + n]
        pos += n
        if _token_fullmatch(name) is None or _bad_value_search(value) is not None:
            return None
        if name not in _HOP_BY_HOP:
            headers.append((name, value))
    if pos + 4 > end:
        return None
    (n,) = _unpack_u32(buf, pos)
    pos += 4
    if n > max_body or pos + n != end:
        return None
    return Response(status, headers, buf[pos:])


def _decode_response_checked(buf: bytes | memoryview, max_body: int) -> Response:
    r = Reader(buf)
    status = r.u32("status")
    if not 100 <= status <= 599:
        raise AbiViolation(f"status {status} is not an HTTP status (100-599)")
    if status < 200:
        raise AbiViolation(f"status {status}: a function cannot send an informational (1xx) response")
    count = r.u32("header count")
    if count > MAX_RESPONSE_HEADERS:
        raise AbiViolation(f"{count} response headers exceed the limit of {MAX_RESPONSE_HEADERS}")
    headers: Headers = []
    for _ in range(count):
        name = r.bytes("header name", MAX_HEADER_NAME).lower()
        value = r.bytes("header value", MAX_HEADER_VALUE)
        if not _TOKEN.fullmatch(name):
            raise AbiViolation(f"response header name {name[:64]!r} is not a valid HTTP token")
        if _BAD_VALUE.search(value):
            raise AbiViolation(f"response header {name.decode()} has a control character in its value")
        if name not in _HOP_BY_HOP:
            headers.append((name, value))
    body = r.bytes("body", max_body, ResponseTooLarge)
    if r.pos != r.end:
        raise AbiViolation(f"{r.end - r.pos} trailing bytes after the response envelope")
    return Response(status, headers, body)


def split_packed(packed: int) -> tuple[int, int]:
    """hive_handle returns (ptr << 32) | len as an i64; wasmtime hands it over signed."""
    packed &= 0xFFFF_FFFF_FFFF_FFFF
    return packed >> 32, packed & 0xFFFF_FFFF
