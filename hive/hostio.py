"""The byte records of the I/O host calls (docs/abi.md, "Host calls for I/O"): a fetch request and a KV
operation from the guest, a result record back. A leaf, like hive.abi, whose reader it reuses."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from hive.abi import Headers, Reader, Response, encode_response
from hive.errors import AbiViolation

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")
OK, ERROR = 0, 1
KV_OPS = {1: "get", 2: "set", 3: "delete", 4: "list", 5: "incr"}
MAX_RECORD_HEADERS = 256
# Fetch request flags (an optional u32 after the body, ABI v1 revision 3).
FETCH_FINAL_URL = 1  # append the redirect count and the final URL to an ok result
FETCH_FLAGS = FETCH_FINAL_URL


def _field(b: bytes) -> bytes:
    return _U32.pack(len(b)) + b


@dataclass(slots=True)
class FetchCall:
    method: bytes
    url: bytes
    headers: Headers
    body: bytes
    flags: int = 0


@dataclass(slots=True)
class KvCall:
    op: str
    store: bytes
    key: bytes
    value: bytes = b""
    ttl_ms: int = 0
    cursor: bytes = b""
    limit: int = 100
    delta: int = 0


def decode_fetch(buf: bytes) -> FetchCall:
    r = Reader(buf)
    method, url = r.bytes("method"), r.bytes("url")
    count = r.u32("header count")
    if count > MAX_RECORD_HEADERS:
        raise AbiViolation(f"a fetch with {count} headers (at most {MAX_RECORD_HEADERS})")
    headers = [(r.bytes("header name"), r.bytes("header value")) for _ in range(count)]
    body = r.bytes("body")
    flags = r.u32("flags") if r.pos != r.end else 0  # older guests end the record with the body
    if flags & ~FETCH_FLAGS:
        raise AbiViolation(f"unknown fetch flags {flags & ~FETCH_FLAGS:#x} (this server knows {FETCH_FLAGS:#x})")
    _end(r, "fetch request")
    return FetchCall(method, url, headers, body, flags)


def decode_kv(buf: bytes) -> KvCall:
    r = Reader(buf)
    code = r.u32("op")
    op = KV_OPS.get(code)
    if op is None:
        raise AbiViolation(f"unknown KV operation {code}")
    call = KvCall(op, r.bytes("store"), r.bytes("key"))
    if op == "set":
        call.value = r.bytes("value")
        call.ttl_ms = _u64(r, "ttl_ms")
    elif op == "list":
        call.cursor = r.bytes("cursor")
        call.limit = r.u32("limit")
    elif op == "incr":
        call.delta = _I64.unpack(r.raw(8, "delta"))[0]
        call.ttl_ms = _u64(r, "ttl_ms")
    _end(r, "KV operation")
    return call


def _u64(r: Reader, what: str) -> int:
    return int(_U64.unpack(r.raw(8, what))[0])


def _end(r: Reader, what: str) -> None:
    if r.pos != r.end:
        raise AbiViolation(f"{r.end - r.pos} trailing bytes after the {what} record")


def error(code: str, message: str) -> bytes:
    return _U32.pack(ERROR) + _field(code.encode()) + _field(message.encode())


def fetched(resp: Response, final: tuple[int, str] | None = None) -> bytes:
    """An ok fetch result; `final` (redirects followed, the final URL) only for a request that asked for
    it with FETCH_FINAL_URL: older guests refuse bytes after the body."""
    out = _U32.pack(OK) + encode_response(resp)
    if final is None:
        return out
    redirects, url = final
    return out + _U32.pack(redirects) + _field(url.encode())


def kv_get(value: bytes | None) -> bytes:
    return _U32.pack(OK) + _U32.pack(value is not None) + _field(value or b"")


def kv_done() -> bytes:
    return _U32.pack(OK)


def kv_deleted(deleted: bool) -> bytes:
    return _U32.pack(OK) + _U32.pack(deleted)


def kv_keys(keys: list[bytes], cursor: bytes | None) -> bytes:
    return _U32.pack(OK) + _U32.pack(len(keys)) + b"".join(_field(k) for k in keys) + _field(cursor or b"")


def kv_number(value: int) -> bytes:
    return _U32.pack(OK) + _I64.pack(value)
