"""Write abi_vectors.json, the byte-level guest ABI v1 vectors shared by the host and SDK tests.

It packs bytes on its own, without hive.abi, so the vectors check that module instead of echoing it.
Text fields are UTF-8 strings in the JSON; bodies are hex. Run: python hive/sdk/gen_vectors.py
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

OUT = Path(__file__).with_name("abi_vectors.json")
HELLO_BODY = b'{"message":"Hello, Edge Hive!","timestamp":"2026-11-24T19:40:00Z"}'


def u32(n: int) -> bytes:
    return struct.pack("<I", n)


def field(b: bytes) -> bytes:
    return u32(len(b)) + b


def headers_bytes(headers: list[tuple[bytes, bytes]]) -> bytes:
    return u32(len(headers)) + b"".join(field(n) + field(v) for n, v in headers)


def request(name: str, method: str, path: str, query: str, headers: list[tuple[str, str]], body: bytes) -> dict:
    raw = [(n.encode(), v.encode()) for n, v in headers]
    env = field(method.encode()) + field(path.encode()) + field(query.encode()) + headers_bytes(raw) + field(body)
    return {
        "name": name,
        "method": method,
        "path": path,
        "query": query,
        "headers": [list(h) for h in headers],
        "body_hex": body.hex(),
        "envelope_hex": env.hex(),
    }


def response(
    name: str,
    status: int,
    headers: list[tuple[str, str]],
    body: bytes,
    decoded_headers: list[tuple[str, str]] | None = None,
) -> dict:
    env = u32(status) + headers_bytes([(n.encode(), v.encode()) for n, v in headers]) + field(body)
    vec = {
        "name": name,
        "status": status,
        "headers": [list(h) for h in headers],
        "body_hex": body.hex(),
        "envelope_hex": env.hex(),
    }
    if decoded_headers is not None:
        vec["decoded_headers"] = [list(h) for h in decoded_headers]
    return vec


def invalid(name: str, env: bytes, reason: str) -> dict:
    return {"name": name, "envelope_hex": env.hex(), "reason": reason}


def one_header(status: int, name: bytes, value: bytes, body: bytes = b"") -> bytes:
    return u32(status) + headers_bytes([(name, value)]) + field(body)


def u64(n: int) -> bytes:
    return struct.pack("<Q", n)


def i64(n: int) -> bytes:
    return struct.pack("<q", n)


def fetch_request(name: str, method: str, url: str, headers: list[tuple[str, str]], body: bytes) -> dict:
    raw = [(n.encode(), v.encode()) for n, v in headers]
    rec = field(method.encode()) + field(url.encode()) + headers_bytes(raw) + field(body)
    return {
        "name": name,
        "method": method,
        "url": url,
        "headers": [list(h) for h in headers],
        "body_hex": body.hex(),
        "record_hex": rec.hex(),
    }


def fetch_request_r3(name: str, method: str, url: str, flags: int) -> dict:
    """A revision 3 fetch record: the revision 2 layout, then u32 flags."""
    v = fetch_request(name, method, url, [], b"")
    return {**v, "flags": flags, "record_hex": v["record_hex"] + u32(flags).hex()}


def final_url_result(name: str, resp: bytes, redirects: int, url: str, **fields: object) -> dict:
    """A revision 3 ok fetch result asked for with FETCH_FINAL_URL: the response, then its tail."""
    return result(name, resp + u32(redirects) + field(url.encode()), **fields, redirects=redirects, url=url)


def result(name: str, payload: bytes, **fields: object) -> dict:
    return {"name": name, **fields, "record_hex": (u32(0) + payload).hex()}


def error_result(name: str, code: str, message: str) -> dict:
    return {
        "name": name,
        "error": code,
        "message": message,
        "record_hex": (u32(1) + field(code.encode()) + field(message.encode())).hex(),
    }


def kv_op(name: str, op: str, store: str, key: bytes, **args: object) -> dict:
    ops = {"get": 1, "set": 2, "delete": 3, "list": 4, "incr": 5}
    rec = u32(ops[op]) + field(store.encode()) + field(key)
    if op == "set":
        rec += field(args["value"]) + u64(args.get("ttl_ms", 0))  # type: ignore[arg-type]
    elif op == "list":
        rec += field(args.get("cursor", b"")) + u32(args.get("limit", 100))  # type: ignore[arg-type]
    elif op == "incr":
        rec += i64(args.get("delta", 1)) + u64(args.get("ttl_ms", 0))  # type: ignore[arg-type]
    shown = {k: (v.hex() if isinstance(v, bytes) else v) for k, v in args.items()}
    return {
        "name": name,
        "op": op,
        "store": store,
        "key_hex": key.hex(),
        **{f"{k}_hex" if isinstance(args[k], bytes) else k: v for k, v in shown.items()},
        "record_hex": rec.hex(),
    }


def build() -> dict:
    binary = bytes(range(256)) + b"\xff\xfe\x00\xc3\x28"
    requests = [
        request("get_minimal", "GET", "/api/v1/edge/hello", "", [], b""),
        request(
            "post_json_hello",
            "POST",
            "/api/v1/edge/hello",
            "",
            [("content-type", "application/json")],
            b'{"name":"Edge Hive"}',
        ),
        request(
            "query_and_repeated_headers",
            "GET",
            "/api/v1/edge/echo",
            "a=1&b=%20x&a=2",
            [("accept", "text/html"), ("x-tag", "one"), ("x-tag", "two"), ("accept", "*/*")],
            b"",
        ),
        request(
            "binary_body", "PUT", "/api/v1/edge/upload", "", [("content-type", "application/octet-stream")], binary
        ),
        request("empty_fields", "", "", "", [("x-empty", "")], b""),
        request(
            "utf8_path_and_body",
            "PATCH",
            "/api/v1/edge/café",
            "q=%C3%A9",
            [("x-note", "naïve")],
            "héllo, 世界 🐝".encode(),
        ),
        request("many_headers", "OPTIONS", "/api/v1/edge/many", "", [(f"x-h{i}", str(i) * i) for i in range(40)], b"x"),
    ]
    responses = [
        response("no_content", 204, [], b""),
        response("hello_json", 200, [("content-type", "application/json")], HELLO_BODY),
        response(
            "repeated_headers",
            201,
            [("set-cookie", "a=1; Path=/"), ("set-cookie", "b=2"), ("location", "/items/7")],
            b"created",
        ),
        response("binary_body", 200, [("content-type", "application/octet-stream")], binary),
        response("empty_header_value", 200, [("x-empty", "")], b"ok"),
        response("status_200_empty", 200, [], b""),
        response("status_599", 599, [], b""),
        response("utf8_body", 200, [("content-type", "text/plain; charset=utf-8")], "héllo 🐝".encode()),
        response("limits", 200, [("x-" + "n" * 254, "v" * 16384)], b""),
        response("max_headers", 200, [(f"x-h{i}", str(i)) for i in range(256)], b""),
        # The host lowercases names and drops hop-by-hop headers; framing is its job.
        response(
            "normalized",
            200,
            [
                ("X-Custom", "v"),
                ("Content-Length", "5"),
                ("transfer-encoding", "chunked"),
                ("Connection", "close"),
                ("Cache-Control", "no-store"),
            ],
            b"hello",
            decoded_headers=[("x-custom", "v"), ("cache-control", "no-store")],
        ),
    ]
    ok = u32(200) + u32(0) + field(b"ok")
    too_many = u32(200) + headers_bytes([(f"x-h{i}".encode(), b"") for i in range(257)]) + field(b"")
    invalid_responses = [
        invalid("empty", b"", "no status"),
        invalid("truncated_status", b"\xc8\x00\x00", "3 of the 4 status bytes"),
        invalid("truncated_header_count", u32(200), "ends after the status"),
        invalid("truncated_body_length", u32(200) + u32(0), "ends before the body length"),
        invalid("truncated_body", ok[:-1], "body shorter than its length"),
        invalid("trailing_bytes", ok + b"\x00", "one byte after the body"),
        invalid("status_99", u32(99) + u32(0) + field(b""), "status below 100"),
        invalid("status_600", u32(600) + u32(0) + field(b""), "status above 599"),
        invalid("status_0", u32(0) + u32(0) + field(b""), "status 0"),
        invalid("status_100", u32(100) + u32(0) + field(b""), "an informational status (1xx)"),
        invalid(
            "status_101",
            u32(101) + u32(1) + field(b"upgrade") + field(b"websocket") + field(b""),
            "101 Switching Protocols would leave the connection broken",
        ),
        invalid("header_name_empty", one_header(200, b"", b"v"), "empty header name"),
        invalid("header_name_space", one_header(200, b"x bad", b"v"), "space in a header name"),
        invalid("header_name_colon", one_header(200, b"x:y", b"v"), "colon in a header name"),
        invalid("header_name_non_ascii", one_header(200, "café".encode(), b"v"), "non-ASCII header name"),
        invalid("header_name_trailing_lf", one_header(200, b"x-a\n", b"v"), "LF at the end of a header name"),
        invalid("header_name_too_long", one_header(200, b"x" * 257, b"v"), "header name over 256 bytes"),
        invalid("header_value_cr", one_header(200, b"x-a", b"a\rb"), "CR in a header value"),
        invalid("header_value_lf", one_header(200, b"x-a", b"a\nSet-Cookie: x=1"), "LF in a header value"),
        invalid("header_value_nul", one_header(200, b"x-a", b"a\x00b"), "NUL in a header value"),
        invalid("header_value_control", one_header(200, b"x-a", b"a\x01b"), "a control character in a header value"),
        invalid("header_value_del", one_header(200, b"x-a", b"a\x7fb"), "DEL in a header value"),
        invalid("header_value_too_long", one_header(200, b"x-a", b"v" * 16385), "header value over 16 KiB"),
        invalid("header_name_length_past_end", u32(200) + u32(1) + u32(100) + b"x-a", "name length past the end"),
        invalid(
            "header_value_length_past_end",
            u32(200) + u32(1) + field(b"x-a") + u32(5) + b"v",
            "value length past the end",
        ),
        invalid("body_length_past_end", u32(200) + u32(0) + u32(10) + b"abc", "body length past the end"),
        invalid("body_length_u32_max", u32(200) + u32(0) + u32(0xFFFFFFFF) + b"abc", "body length 2**32-1"),
        invalid("too_many_headers", too_many, "257 well-formed headers, one over the limit"),
        invalid("header_count_u32_max", u32(200) + u32(0xFFFFFFFF) + field(b""), "header count 2**32-1"),
    ]
    good = bytes.fromhex(requests[1]["envelope_hex"])
    invalid_requests = [
        invalid("empty", b"", "no method length"),
        invalid("truncated_method", u32(4) + b"GE", "method shorter than its length"),
        invalid("truncated_body", good[:-1], "the body is one byte short"),
        invalid("trailing_bytes", good + b"\x00", "one byte after the body"),
        invalid("missing_body_length", good[: len(good) - 24], "ends where the body length should start"),
        invalid(
            "header_count_lies",
            field(b"GET") + field(b"/") + field(b"") + u32(1000) + field(b""),
            "header count 1000 with no headers",
        ),
        invalid(
            "header_count_u32_max",
            field(b"GET") + field(b"/") + field(b"") + u32(0xFFFFFFFF) + field(b""),
            "header count 2**32-1",
        ),
        invalid("path_length_u32_max", field(b"GET") + u32(0xFFFFFFFF) + b"/", "path length 2**32-1"),
    ]
    fetch_requests = [
        fetch_request("get_minimal", "GET", "https://api.example.com/", [], b""),
        fetch_request(
            "post_json",
            "POST",
            "https://api.example.com/v1/send?x=1",
            [("content-type", "application/json"), ("authorization", "Bearer sk-test")],
            b'{"to":"a@example.com"}',
        ),
        fetch_request(
            "binary_body_repeated_headers",
            "PUT",
            "http://127.0.0.1:8080/upload",
            [("x-tag", "one"), ("x-tag", "two")],
            binary,
        ),
    ]
    resp = u32(200) + headers_bytes([(b"content-type", b"application/json")]) + field(b'{"ok":true}')
    results = [
        result(
            "fetch_ok", resp, status=200, headers=[["content-type", "application/json"]], body_hex=b'{"ok":true}'.hex()
        ),
        result("fetch_no_body", u32(204) + headers_bytes([]) + field(b""), status=204, headers=[], body_hex=""),
        error_result(
            "fetch_refused", "host_not_allowed", "https://evil.example is not in this function's allowed_hosts"
        ),
        result("kv_get_found", u32(1) + field(b"value-1"), found=True, value_hex=b"value-1".hex()),
        result("kv_get_missing", u32(0) + field(b""), found=False, value_hex=""),
        result("kv_set", b""),
        result("kv_delete", u32(1), deleted=True),
        result(
            "kv_list",
            u32(2) + field(b"user:1") + field(b"user:2") + field(b"user:2"),
            keys_hex=[b"user:1".hex(), b"user:2".hex()],
            cursor_hex=b"user:2".hex(),
        ),
        result("kv_list_end", u32(0) + field(b""), keys_hex=[], cursor_hex=""),
        result("kv_incr", i64(-3), value=-3),
        error_result("kv_quota", "quota_exceeded", "store 'default' is over its quota of 104857600 bytes"),
    ]
    # Revision 3 (docs/abi.md): apart from the above, which every revision 2 SDK decodes strictly.
    fetch_requests_r3 = [
        fetch_request_r3("final_url", "GET", "https://api.example.com/old", 1),
        fetch_request_r3("no_flags", "GET", "https://api.example.com/", 0),
    ]
    fields = {"status": 200, "headers": [["content-type", "application/json"]], "body_hex": b'{"ok":true}'.hex()}
    results_r3 = [
        final_url_result("fetch_redirected", resp, 2, "https://api.example.com/new?page=2", **fields),
        final_url_result("fetch_direct", resp, 0, "https://api.example.com/old", **fields),
    ]
    kv_ops = [
        kv_op("get", "get", "default", b"visits"),
        kv_op("set_ttl", "set", "default", b"rate:EUR", value=b'{"usd":1.08}', ttl_ms=60_000),
        kv_op("set_binary", "set", "cache", bytes(range(16)), value=binary, ttl_ms=0),
        kv_op("delete", "delete", "default", b"visits"),
        kv_op("list_prefix", "list", "default", b"user:", cursor=b"", limit=100),
        kv_op("list_cursor", "list", "default", b"user:", cursor=b"user:2", limit=2),
        kv_op("incr", "incr", "default", b"visits", delta=1, ttl_ms=0),
        kv_op("incr_negative_ttl", "incr", "default", b"quota", delta=-5, ttl_ms=3_600_000),
    ]
    return {
        "fetch_requests": fetch_requests,
        "results": results,
        "kv_ops": kv_ops,
        "fetch_requests_r3": fetch_requests_r3,
        "results_r3": results_r3,
        "abi_version": 1,
        "about": "Guest ABI v1 test vectors (docs/abi.md). All integers are u32 little-endian. Text fields are "
        "UTF-8; bodies and envelopes are hex. decoded_headers, when present, is what the host yields "
        "after lowercasing names and dropping hop-by-hop headers. Generated by hive/sdk/gen_vectors.py.",
        "requests": requests,
        "responses": responses,
        "invalid_responses": invalid_responses,
        "invalid_requests": invalid_requests,
    }


def main() -> None:
    OUT.write_text(json.dumps(build(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
