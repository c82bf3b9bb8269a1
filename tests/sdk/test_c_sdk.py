"""The C SDK (hive/sdk/c/edge_hive.h) against the ABI vectors, natively and as wasm, and the hello build."""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
import wasmtime
from hypothesis import given, settings
from hypothesis import strategies as st

from hive import abi
from hive.build import C_SDK_DIR, build_function, load_function_manifest
from hive.errors import AbiViolation, BuildError, InvalidManifest

pytestmark = pytest.mark.slow  # runs the zig compiler (about 20 s the first time, for wasi-libc)

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "hive" / "sdk" / "abi_vectors.json").read_text(encoding="utf-8"))
ALLOWED_WASI = frozenset({
    "clock_time_get", "clock_res_get", "random_get", "fd_write", "fd_read", "fd_close", "fd_seek", "fd_fdstat_get",
    "fd_prestat_get", "fd_prestat_dir_name", "environ_get", "environ_sizes_get", "args_get", "args_sizes_get",
    "proc_exit", "sched_yield",
})
MAX_BODY = 6 << 20
WARN = ["-Wall", "-Wextra", "-Werror"]

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


def zig_cc(*args: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ziglang", "cc", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


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
    d = tmp_path_factory.mktemp("csdk")
    src = d / "driver.c"
    src.write_text(DRIVER_C)
    native = zig_cc("-std=c11", "-O1", "-g", "-fsanitize=undefined", "-fsanitize-trap=undefined", *WARN,
                    "-I", C_SDK_DIR, "-o", d / "driver", src)
    wasm = zig_cc("--target=wasm32-wasi", "-O2", "-mexec-model=reactor", "-s", *WARN, "-I", C_SDK_DIR,
                  "-o", d / "driver.wasm", src)
    return {"native": (d / "driver", native.stderr), "wasm": (d / "driver.wasm", wasm.stderr)}


@pytest.fixture(scope="module", params=["native", "wasm"])
def guest(request: pytest.FixtureRequest, builds: dict[str, tuple[Path, str]]) -> NativeGuest | WasmGuest:
    path = builds[request.param][0]
    return NativeGuest(path) if request.param == "native" else WasmGuest(path)


@pytest.fixture(scope="module")
def wasm_driver(builds: dict[str, tuple[Path, str]]) -> WasmGuest:
    return WasmGuest(builds["wasm"][0])


def req(method: bytes = b"GET", path: bytes = b"/t", query: bytes = b"", headers: abi.Headers | None = None,
        body: bytes = b"") -> bytes:
    return abi.encode_request(method, path, query, headers or [], body)


def decode(out: bytes) -> abi.Response:
    return abi.decode_response(out, MAX_BODY)


def test_sdk_compiles_without_warnings(builds: dict[str, tuple[Path, str]]) -> None:
    assert builds["native"][1] == "" and builds["wasm"][1] == ""


def test_request_vectors_decode(guest: NativeGuest | WasmGuest) -> None:
    vectors = VECTORS["requests"]
    outs = guest.run([(DESCRIBE, bytes.fromhex(v["envelope_hex"])) for v in vectors])
    for v, out in zip(vectors, outs, strict=True):
        resp = decode(out)
        assert (resp.status, resp.body) == (200, bytes.fromhex(v["envelope_hex"])), v["name"]


def test_response_vectors_encode(guest: NativeGuest | WasmGuest) -> None:
    vectors = VECTORS["responses"]
    outs = guest.run([(BUILD, req(body=bytes.fromhex(v["envelope_hex"]))) for v in vectors])
    for v, out in zip(vectors, outs, strict=True):
        assert out.hex() == v["envelope_hex"], v["name"]


def test_header_lookup(guest: NativeGuest | WasmGuest) -> None:
    cases, expected = [], []
    for v in VECTORS["requests"]:
        env = bytes.fromhex(v["envelope_hex"])
        names = {n for n, _ in v["headers"]} | {"absent"}
        for name in sorted(names) + [n.upper() for n in sorted(names)]:
            decoded = abi.decode_request(env)
            cases.append((LOOKUP, req(decoded.method, decoded.path, name.encode(), decoded.headers, decoded.body)))
            expected.append([val.encode() for n, val in v["headers"] if n.lower() == name.lower()])
    for out, values in zip(guest.run(cases), expected, strict=True):
        resp = decode(out)
        assert resp.status == (200 if values else 404)
        assert resp.body == (values[0] if values else b"")
        assert [val for _, val in resp.headers] == values


def test_invalid_requests_get_400(guest: NativeGuest | WasmGuest) -> None:
    vectors = VECTORS["invalid_requests"]
    for v, out in zip(vectors, guest.run([(DESCRIBE, bytes.fromhex(v["envelope_hex"])) for v in vectors]),
                      strict=True):
        resp = decode(out)
        assert resp.status == 400, v["name"]
        assert json.loads(resp.body)["error"] == "bad_request"


def _mutate(rng: random.Random, env: bytes) -> bytes:
    b = bytearray(env)
    match rng.randrange(5):
        case 0:
            return bytes(b[:rng.randrange(len(b))])
        case 1:
            return env + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        case 2:  # a lying length or count at a word boundary
            pos = rng.randrange(0, max(1, len(b) - 3))
            b[pos:pos + 4] = struct.pack("<I", rng.choice([0, 1, 7, 255, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
        case 3:
            b[rng.randrange(len(b))] = rng.randrange(256)
        case _:
            del b[rng.randrange(len(b))]
    return bytes(b)


def test_mutated_requests_never_crash(guest: NativeGuest | WasmGuest) -> None:
    rng = random.Random(1729)
    seeds = [bytes.fromhex(v["envelope_hex"]) for v in VECTORS["requests"] if len(v["envelope_hex"]) < 1000]
    inputs = [_mutate(rng, rng.choice(seeds)) for _ in range(600)]
    for env, out in zip(inputs, guest.run([(DESCRIBE, e) for e in inputs]), strict=True):
        resp = decode(out)
        try:
            abi.decode_request(env)
        except AbiViolation:
            assert resp.status == 400
        else:
            assert (resp.status, resp.body) == (200, env)


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
    folder = tmp_path_factory.mktemp("fn") / "hello"
    shutil.copytree(ROOT / "functions" / "hello", folder, ignore=shutil.ignore_patterns("*.wasm"))
    lines: list[str] = []
    return build_function(folder, echo=lines.append), lines


def test_hello_builds(hello_build: tuple[Path, list[str]]) -> None:
    path, lines = hello_build
    assert path.name == "hello.wasm" and path.is_file()
    assert "ziglang cc --target=wasm32-wasi -O2 -mexec-model=reactor -s" in lines[0]


def test_hello_exports_and_imports(hello_build: tuple[Path, list[str]]) -> None:
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(hello_build[0]))
    exports = {e.name: e.type for e in module.exports}
    assert isinstance(exports["memory"], wasmtime.MemoryType)
    sigs = {name: ([str(p) for p in t.params], [str(r) for r in t.results])
            for name, t in exports.items() if isinstance(t, wasmtime.FuncType)}
    assert sigs["hive_abi_v1"] == ([], [])
    assert sigs["hive_alloc"] == (["i32"], ["i32"])
    assert sigs["hive_free"] == (["i32", "i32"], [])
    assert sigs["hive_handle"] == (["i32", "i32"], ["i64"])
    assert sigs["_initialize"] == ([], [])
    for imp in module.imports:
        assert (imp.module == "wasi_snapshot_preview1" and imp.name in ALLOWED_WASI) or \
            (imp.module, imp.name) == ("hive", "log"), (imp.module, imp.name)


def _hello(guest: WasmGuest, body: bytes, headers: abi.Headers | None = None) -> abi.Response:
    return decode(guest.call(req(b"POST", b"/api/v1/edge/hello", b"", headers, body)))


def test_hello_responses(hello_build: tuple[Path, list[str]]) -> None:
    guest = WasmGuest(hello_build[0])
    resp = _hello(guest, b'{"name": "Edge Hive"}', [(b"content-type", b"application/json")])
    assert resp.status == 200 and resp.headers == [(b"content-type", b"application/json")]
    m = re.fullmatch(rb'\{"message":"Hello, Edge Hive!","timestamp":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"\}', resp.body)
    assert m, resp.body
    stamp = datetime.strptime(m[1].decode(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((stamp - datetime.now(UTC)).total_seconds()) < 300
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
