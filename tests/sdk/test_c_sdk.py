"""The C SDK (hive/sdk/c/edge_hive.h) against the ABI vectors, natively and as wasm, and the hello build."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import wasmtime
from hypothesis import given, settings
from hypothesis import strategies as st

from hive import abi
from hive.build import build_function, load_function_manifest
from hive.errors import BuildError, InvalidManifest
from tests.sdk import common
from tests.sdk.common import (
    ROOT,
    build_c_driver,
    build_logged,
    check_echoed_or_rejected,
    check_header_lookups,
    check_hello_edge_hive,
    check_imports_allowed,
    check_invalid_requests,
    check_request_vectors,
    check_response_vectors,
    copy_example,
    decode,
    exports_and_imports,
    mutated_requests,
)

pytestmark = pytest.mark.slow  # runs the zig compiler (about 20 s the first time, for wasi-libc)

ALLOWED_WASI = frozenset({
    "clock_time_get", "clock_res_get", "random_get", "fd_write", "fd_read", "fd_close", "fd_seek", "fd_fdstat_get",
    "fd_prestat_get", "fd_prestat_dir_name", "environ_get", "environ_sizes_get", "args_get", "args_sizes_get",
    "proc_exit", "sched_yield",
})

DESCRIBE, BUILD, LOOKUP, JSON_GET, ESCAPE, MISC = range(6)

# One handler whose behaviour the test picks (a mode), so a single program covers the whole API.
DRIVER_C = r"""
#include "edge_hive.h"

static uint32_t mode;

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void le32(uint8_t out[4], size_t n) {
    for (int i = 0; i < 4; i++) out[i] = (uint8_t)(n >> 8 * i);
}

static void put_field(hive_response *r, hive_str s) {
    uint8_t n[4];
    le32(n, s.len);
    hive_response_append(r, n, 4);
    hive_response_append(r, s.ptr, s.len);
}

static hive_response *misc(const hive_request *req) {
    hive_response *r;
    if (hive_str_eq(req->query, "null")) return NULL;
    if (hive_str_eq(req->query, "bad-status")) return hive_response_new(600);
    if (hive_str_eq(req->query, "oom")) {
        hive_tmp_alloc(SIZE_MAX - 4);
        return hive_response_text(200, "unreachable");
    }
    if (hive_str_eq(req->query, "bad-headers")) {
        static char big[HIVE_MAX_HEADER_VALUE + 1];
        int dropped = 0, kept = 0;
        memset(big, 'v', sizeof big);
        r = hive_response_new(200);
        dropped -= hive_response_add_header(r, "x bad", "v");
        dropped -= hive_response_add_header(r, "x-a", "a\r\nb");
        dropped -= hive_response_add_header(r, "", "v");
        dropped -= hive_response_add_header_n(r, "x-nul", 5, "a\0b", 3);
        dropped -= hive_response_add_header_n(r, "x-big", 5, big, sizeof big);
        kept += hive_response_add_header_n(r, "x-max", 5, big, sizeof big - 1) == 0;
        for (int i = 0; i < 300; i++) kept += hive_response_add_header(r, "x-many", "1") == 0;
        hive_response_printf(r, "%d %d", dropped, kept);
        return r;
    }
    if (hive_str_eq(req->query, "fmt")) {
        return hive_response_text(200, hive_fmt("%s|%d|%.*s", hive_cstr(req->path), 42, HIVE_FMT(req->method)));
    }
    if (hive_str_eq(req->query, "json")) return hive_response_json(201, "{\"a\":1}");
    if (hive_str_eq(req->query, "status")) {
        r = hive_response_new(200);
        hive_response_set_status(r, 418);
        return r;
    }
    if (hive_str_eq(req->query, "big")) {
        r = hive_response_new(200);
        for (int i = 0; i < 100000; i++) hive_response_printf(r, "%09d\n", i);
        return r;
    }
    return hive_response_text(404, "unknown case");
}

hive_response *handler(const hive_request *req) {
    hive_response *r;
    switch (mode) {
    case 0: /* the request, re-encoded from the decoded fields */
        r = hive_response_new(200);
        put_field(r, req->method);
        put_field(r, req->path);
        put_field(r, req->query);
        {
            uint8_t n[4];
            le32(n, req->header_count);
            hive_response_append(r, n, 4);
        }
        for (size_t i = 0; i < req->header_count; i++) {
            put_field(r, req->headers[i].name);
            put_field(r, req->headers[i].value);
        }
        put_field(r, req->body);
        return r;
    case 1: { /* the body is a (trusted) response envelope: rebuild it with the builder API */
        const uint8_t *p = (const uint8_t *)req->body.ptr;
        r = hive_response_new((int)rd32(p));
        uint32_t count = rd32(p + 4);
        p += 8;
        for (uint32_t i = 0; i < count; i++) {
            uint32_t nl = rd32(p), vl = rd32(p + 4 + nl);
            hive_response_add_header_n(r, (const char *)p + 4, nl, (const char *)p + 8 + nl, vl);
            p += 8 + nl + vl;
        }
        uint32_t bl = rd32(p);
        hive_response_set_body(r, "replaced", 8);
        hive_response_set_body(r, p + 4, bl / 2);
        hive_response_append(r, p + 4 + bl / 2, bl - bl / 2);
        return r;
    }
    case 2: { /* the query names a header: first value as the body, every value as an x-value header */
        const char *name = hive_cstr(req->query);
        hive_str first = hive_request_header(req, name), v;
        size_t it = 0;
        r = hive_response_new(first.ptr ? 200 : 404);
        while (hive_request_header_next(req, name, &it, &v))
            hive_response_add_header_n(r, "x-value", 7, v.ptr, v.len);
        if (first.ptr) hive_response_set_body(r, first.ptr, first.len);
        return r;
    }
    case 3: { /* the query names a key of the JSON body */
        hive_str out;
        int rc = hive_json_get_string(req->body, hive_cstr(req->query), &out);
        if (rc == 1 && out.ptr[out.len] != 0) return hive_response_text(500, "not NUL-terminated");
        r = hive_response_new(rc == 1 ? 200 : rc == 0 ? 404 : 422);
        hive_response_set_body(r, out.ptr, out.len);
        return r;
    }
    case 4:
        return hive_response_text(200, hive_json_escape(req->body));
    default:
        return misc(req);
    }
}

#ifdef __wasm__
void test_set_mode(uint32_t m);
__attribute__((export_name("test_set_mode"))) void test_set_mode(uint32_t m) { mode = m; }
#else
/* stdin: ([u32 mode][u32 len][bytes])*, stdout: ([u32 len][bytes])* */
int main(void) {
    size_t cap = 1 << 16, len = 0, n;
    uint8_t *in = malloc(cap);
    while (in && (n = fread(in + len, 1, cap - len, stdin)) > 0)
        if ((len += n) == cap) in = realloc(in, cap *= 2);
    if (!in) return 2;
    for (size_t pos = 0; pos + 8 <= len;) {
        mode = rd32(in + pos);
        size_t size = rd32(in + pos + 4), out_len;
        pos += 8;
        /* An exact-size copy, so reading past the envelope is a heap overflow valgrind can see. */
        uint8_t *req = malloc(size ? size : 1);
        memcpy(req, in + pos, size);
        pos += size;
        const uint8_t *out = hive_dispatch(req, size, &out_len);
        uint8_t head[4];
        le32(head, out_len);
        fwrite(head, 1, 4, stdout);
        fwrite(out, 1, out_len, stdout);
        free(req);
    }
    free(in);
    return 0;
}
#endif
"""


class NativeGuest:
    def __init__(self, exe: Path) -> None:
        self.exe = exe
        self.stderr = ""

    def run(self, cases: list[tuple[int, bytes]]) -> list[bytes]:
        stdin = b"".join(struct.pack("<II", mode, len(env)) + env for mode, env in cases)
        proc = subprocess.run([self.exe], input=stdin, capture_output=True, timeout=120)
        self.stderr = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == 0, self.stderr
        out, pos = [], 0
        while pos < len(proc.stdout):
            (n,) = struct.unpack_from("<I", proc.stdout, pos)
            out.append(proc.stdout[pos + 4:pos + 4 + n])
            pos += 4 + n
        assert len(out) == len(cases)
        return out

    def logs(self) -> str:
        return self.stderr


class WasmGuest:
    """Calls a guest the way the host does, with plain wasmtime, including request-buffer reuse."""

    def __init__(self, path: Path) -> None:
        engine = wasmtime.Engine()
        self.module = wasmtime.Module.from_file(engine, str(path))
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        i32 = wasmtime.ValType.i32()
        linker.define_func("hive", "log", wasmtime.FuncType([i32, i32, i32], []), self._log, access_caller=True)
        self.store = wasmtime.Store(engine)
        self.store.set_wasi(wasmtime.WasiConfig())
        self.exports = linker.instantiate(self.store, self.module).exports(self.store)
        self.memory = self.exports["memory"]
        self.exports["_initialize"](self.store)
        self.buf, self.cap = 0, 0
        self.log_lines: list[tuple[int, str]] = []

    def _log(self, caller: wasmtime.Caller, level: int, ptr: int, n: int) -> None:
        self.log_lines.append((level, caller["memory"].read(caller, ptr, ptr + n).decode("utf-8", "replace")))

    def call(self, env: bytes, mode: int | None = None) -> bytes:
        if mode is not None:
            self.exports["test_set_mode"](self.store, mode)
        if len(env) > self.cap:
            if self.buf:
                self.exports["hive_free"](self.store, self.buf, self.cap)
            self.cap = max(len(env), 64)
            self.buf = self.exports["hive_alloc"](self.store, self.cap)
            assert self.buf and self.buf % 8 == 0
        self.memory.write(self.store, env, self.buf)
        ptr, n = abi.split_packed(self.exports["hive_handle"](self.store, self.buf, len(env)))
        assert ptr + n <= self.memory.data_len(self.store)
        return bytes(self.memory.read(self.store, ptr, ptr + n))

    def run(self, cases: list[tuple[int, bytes]]) -> list[bytes]:
        return [self.call(env, mode) for mode, env in cases]

    def logs(self) -> str:
        return "\n".join(msg for _, msg in self.log_lines)


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, str]]:
    return build_c_driver(tmp_path_factory.mktemp("csdk"), DRIVER_C, "-mexec-model=reactor", "-s")


@pytest.fixture(scope="module", params=["native", "wasm"])
def guest(request: pytest.FixtureRequest, builds: dict[str, tuple[Path, str]]) -> NativeGuest | WasmGuest:
    path = builds[request.param][0]
    return NativeGuest(path) if request.param == "native" else WasmGuest(path)


@pytest.fixture(scope="module")
def wasm_driver(builds: dict[str, tuple[Path, str]]) -> WasmGuest:
    return WasmGuest(builds["wasm"][0])


def req(method: bytes = b"GET", path: bytes = b"/t", query: bytes = b"", headers: abi.Headers | None = None,
        body: bytes = b"") -> bytes:
    """common.req, but under /t by default."""
    return common.req(method, path, query, headers, body)


def test_sdk_compiles_without_warnings(builds: dict[str, tuple[Path, str]]) -> None:
    assert builds["native"][1] == "" and builds["wasm"][1] == ""


def in_mode(guest: NativeGuest | WasmGuest, mode: int) -> common.Run:
    """Runs envelopes through one mode of the driver."""
    return lambda envs: guest.run([(mode, env) for env in envs])


def test_request_vectors_decode(guest: NativeGuest | WasmGuest) -> None:
    check_request_vectors(in_mode(guest, DESCRIBE))


def test_response_vectors_encode(guest: NativeGuest | WasmGuest) -> None:
    check_response_vectors(lambda envs: guest.run([(BUILD, req(body=env)) for env in envs]))


def test_header_lookup(guest: NativeGuest | WasmGuest) -> None:
    check_header_lookups(in_mode(guest, LOOKUP))


def test_invalid_requests_get_400(guest: NativeGuest | WasmGuest) -> None:
    check_invalid_requests(in_mode(guest, DESCRIBE))


def test_mutated_requests_never_crash(guest: NativeGuest | WasmGuest) -> None:
    inputs = mutated_requests()
    for env, out in zip(inputs, in_mode(guest, DESCRIBE)(inputs), strict=True):
        check_echoed_or_rejected(env, decode(out))


JSON_CASES: list[tuple[bytes, str, int, bytes]] = [
    (b'{"name":"Edge Hive"}', "name", 200, b"Edge Hive"),
    (b' \n{ "name" : "x" , "n":1 } \t', "name", 200, b"x"),
    (b'{"name":""}', "name", 200, b""),
    (b'{"other":"x"}', "name", 404, b""),
    (b"{}", "name", 404, b""),
    (b'{"name":5}', "name", 404, b""),
    (b'{"name":null}', "name", 404, b""),
    (b'{"name":"first","name":"last"}', "name", 200, b"last"),
    (b'{"name":"first","name":7}', "name", 404, b""),
    (b'{"nested":{"name":"inner"},"list":["name"],"name":"outer"}', "name", 200, b"outer"),
    (b'{"nested":{"name":"inner"}}', "name", 404, b""),
    (b'{"n\\u0061me":"escaped key"}', "name", 200, b"escaped key"),
    (b'{"name":"a\\"b\\\\c\\/d\\n\\r\\t\\b\\f"}', "name", 200, b'a"b\\c/d\n\r\t\b\x0c'),
    (b'{"name":"\\u00e9\\u4e16\\ud83d\\udc1d"}', "name", 200, "é世🐝".encode()),
    (b'{"name":"\\ud83d"}', "name", 200, "\ufffd".encode()),
    (b'{"name":"\\udc1d\\ud83dx"}', "name", 200, "\ufffd\ufffdx".encode()),
    (b'{"name":"\\ud83d\\u0041"}', "name", 200, "\ufffdA".encode()),
    (b'{"name":"\\ud83d\\ue000"}', "name", 200, "\ufffd\ue000".encode()),
    (b'{"name":"nul\\u0000inside"}', "name", 200, b"nul\x00inside"),
    (b'{"name":"raw \xc3\xa9 utf8"}', "name", 200, "raw é utf8".encode()),
    (b'{"a":[1,-2.5e+3,0.0,true,false,null,{}],"name":"ok"}', "name", 200, b"ok"),
    (b"", "name", 422, b""),
    (b"not json", "name", 422, b""),
    (b'["name","x"]', "name", 422, b""),
    (b'"name"', "name", 422, b""),
    (b'{"name":"Edge Hive"', "name", 422, b""),
    (b'{"name":"Edge Hive"} x', "name", 422, b""),
    (b'{"name":"x",}', "name", 422, b""),
    (b'{"name":"x"]', "name", 422, b""),
    (b'{"a":[1},"name":"x"}', "name", 422, b""),
    (b'{"a":1 "name":"x"}', "name", 422, b""),
    (b'{"a" 1,"name":"x"}', "name", 422, b""),
    (b'{1:"x"}', "name", 422, b""),
    (b'{"name":"tab\there"}', "name", 422, b""),
    (b'{"name":"bad \\x escape"}', "name", 422, b""),
    (b'{"name":"\\u12g4"}', "name", 422, b""),
    (b'{"a":01,"name":"x"}', "name", 422, b""),
    (b'{"a":NaN,"name":"x"}', "name", 422, b""),
    (b'{"a":tru,"name":"x"}', "name", 422, b""),
    (b'{"name":"unterminated}', "name", 422, b""),
    (b"{" + b'"a":[' * 70 + b"]" * 70 + b"}", "name", 422, b""),
    (b'{"a":' + b"[" * 60 + b"]" * 60 + b',"name":"deep ok"}', "name", 200, b"deep ok"),
]


def test_json_get_string(guest: NativeGuest | WasmGuest) -> None:
    outs = guest.run([(JSON_GET, req(query=key.encode(), body=body)) for body, key, _, _ in JSON_CASES])
    for (body, _, status, value), out in zip(JSON_CASES, outs, strict=True):
        resp = decode(out)
        assert (resp.status, resp.body) == (status, value), body


def _escape_oracle(data: bytes) -> bytes:
    # Python's "replace" follows Unicode's maximal-subpart rule, like the SDK.
    return json.dumps(data.decode("utf-8", "replace"), ensure_ascii=False)[1:-1].encode()


ESCAPE_CASES = [b"", b"plain", b'"\\/\b\f\n\r\t', bytes(range(32)), b"\x7f", "é世🐝\u2028".encode(),
                b"\xff", b"\xc3", b"\xe2\x82", b"\xe2\x82x", b"\xf0\x9f\x90", b"\xed\xa0\x80", b"\xc0\xaf",
                b"\xf4\x90\x80\x80", b"\xe0\x80\x80", b"a\x00b"]


def test_json_escape(guest: NativeGuest | WasmGuest) -> None:
    outs = guest.run([(ESCAPE, req(body=b)) for b in ESCAPE_CASES])
    for data, out in zip(ESCAPE_CASES, outs, strict=True):
        resp = decode(out)
        assert resp.body == _escape_oracle(data), data
        assert json.loads(b'"' + resp.body + b'"') == data.decode("utf-8", "replace")


def test_failures_and_helpers(guest: NativeGuest | WasmGuest) -> None:
    names = ["null", "bad-status", "oom", "bad-headers", "fmt", "json", "status", "big"]
    outs = dict(zip(names, guest.run([(MISC, req(b"POST", b"/p/q", n.encode())) for n in names]), strict=True))
    for name, code in [("null", "handler_failed"), ("bad-status", "handler_failed"), ("oom", "out_of_memory")]:
        resp = decode(outs[name])
        assert resp.status == 500 and json.loads(resp.body)["error"] == code, name
        assert resp.headers == [(b"content-type", b"application/json")]
    bad = decode(outs["bad-headers"])
    assert bad.status == 200 and bad.body == b"5 256"
    assert len(bad.headers) == 256 and bad.headers[0] == (b"x-max", b"v" * 16384)
    assert "dropped response header" in guest.logs() and "more than 256 headers" in guest.logs()
    assert decode(outs["fmt"]).body == b"/p/q|42|POST"
    assert decode(outs["json"]) == abi.Response(201, [(b"content-type", b"application/json")], b'{"a":1}')
    assert decode(outs["status"]).status == 418
    big = decode(outs["big"]).body
    assert len(big) == 1_000_000 and big.endswith(b"000099999\n")


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8), st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8)), st.sampled_from(["name", "", "é", "a"]), st.booleans())
def test_json_get_string_matches_python(wasm_driver: WasmGuest, obj: dict, key: str, ascii_only: bool) -> None:
    try:
        body = json.dumps(obj, ensure_ascii=ascii_only).encode()
    except UnicodeEncodeError:  # a lone surrogate has no raw UTF-8 form; JSON carries it as \uXXXX
        body = json.dumps(obj).encode()
    resp = decode(wasm_driver.call(req(query=key.encode(), body=body), JSON_GET))
    value = obj.get(key)
    if isinstance(value, str):
        # Lone surrogates have no UTF-8 form; the SDK yields U+FFFD like a browser.
        expected = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace").encode()
        assert (resp.status, resp.body) == (200, expected)
    else:
        assert resp.status == 404


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_json_escape_matches_python(wasm_driver: WasmGuest, data: bytes) -> None:
    assert decode(wasm_driver.call(req(body=data), ESCAPE)).body == _escape_oracle(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_random_requests_never_crash(wasm_driver: WasmGuest, data: bytes) -> None:
    resp = decode(wasm_driver.call(data, DESCRIBE))
    assert resp.status in (200, 400)


# ---- hello, built the way `hive build` does it ----------------------------------------------------


@pytest.fixture(scope="module")
def hello_build(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    return build_logged(copy_example(tmp_path_factory, "hello"))


def test_hello_builds(hello_build: tuple[Path, list[str]]) -> None:
    path, lines = hello_build
    assert path.name == "hello.wasm" and path.is_file()
    assert "ziglang cc --target=wasm32-wasi -O2 -mexec-model=reactor -s" in lines[0]


def test_hello_exports_and_imports(hello_build: tuple[Path, list[str]]) -> None:
    sigs, imports = exports_and_imports(hello_build[0])
    assert sigs["hive_abi_v1"] == ([], [])
    assert sigs["hive_alloc"] == (["i32"], ["i32"])
    assert sigs["hive_free"] == (["i32", "i32"], [])
    assert sigs["hive_handle"] == (["i32", "i32"], ["i64"])
    assert sigs["_initialize"] == ([], [])
    check_imports_allowed(imports, ALLOWED_WASI)


def _hello(guest: WasmGuest, body: bytes, headers: abi.Headers | None = None) -> abi.Response:
    return decode(guest.call(req(b"POST", b"/api/v1/edge/hello", b"", headers, body)))


def test_hello_responses(hello_build: tuple[Path, list[str]]) -> None:
    guest = WasmGuest(hello_build[0])
    check_hello_edge_hive(_hello(guest, b'{"name": "Edge Hive"}', [(b"content-type", b"application/json")]))
    for body, name in [(b"", "World"), (b"not json", "World"), (b'{"name": 7}', "World"), (b'{"who":"x"}', "World"),
                       (b'{"name":"a\\"b\\u00e9\\ud83d\\udc1d</"}', 'a"bé🐝</'), ("{\"name\":\"π\"}".encode(), "π"),
                       (b'{"name":"\\n\\u0000"}', "\n\x00")]:
        resp = _hello(guest, body)
        assert resp.status == 200
        assert json.loads(resp.body)["message"] == f"Hello, {name}!", body
    big = b'{"name":"' + b"x" * 100_000 + b'"}'  # a bigger request buffer replaces the first
    assert json.loads(_hello(guest, big).body)["message"] == "Hello, " + "x" * 100_000 + "!"
    assert decode(guest.call(b"\x01\x00")).status == 400
    assert guest.log_lines == []


def test_build_rejects_unknown_languages(tmp_path: Path) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "z"\nlanguage = "cobol"\n')
    with pytest.raises(BuildError, match="unknown language 'cobol'"):
        build_function(tmp_path / "hive.toml")


def test_build_reports_compiler_errors(tmp_path: Path) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "bad"\nlanguage = "c"\n')
    (tmp_path / "bad.c").write_text('#include "edge_hive.h"\nhive_response *handler(const hive_request *r) { oops }\n')
    with pytest.raises(BuildError, match="oops") as e:
        build_function(tmp_path)
    assert e.value.code == "build_failed"


def test_build_without_ziglang_names_the_install_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "f"\nlanguage = "c"\n')
    (tmp_path / "f.c").write_text("")
    monkeypatch.setitem(sys.modules, "ziglang", None)  # find_spec then reports it missing
    with pytest.raises(BuildError, match="pip install ziglang"):
        build_function(tmp_path)


@pytest.mark.parametrize("text", [
    "", "not toml [", "[function]\nlanguage = 'c'\n", "[function]\nname = '../x'\nlanguage = 'c'\n",
    "[function]\nname = 'x'\n", "[function]\nname = 'x'\nlanguage = 'c'\nsources = 'a.c'\n",
])
def test_bad_manifests(tmp_path: Path, text: str) -> None:
    (tmp_path / "hive.toml").write_text(text)
    with pytest.raises(InvalidManifest):
        build_function(tmp_path)


def test_manifest_loads_from_folder_or_file() -> None:
    folder = ROOT / "functions" / "hello"
    assert load_function_manifest(folder) == load_function_manifest(folder / "hive.toml")
    assert load_function_manifest(folder)["function"] == {"name": "hello", "language": "c", "sources": ["hello.c"]}
    with pytest.raises(InvalidManifest, match="not found"):
        load_function_manifest(folder / "missing.toml")
