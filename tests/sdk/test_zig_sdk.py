"""The Zig SDK (hive/sdk/zig/edge_hive.zig): hello-zig, an echo guest over the ABI vectors, the template.

Everything is built with hive.build.build_function, the way `edge-hive function build` does it, and run
through the real host sandbox (import check, host functions, limits).
"""

from __future__ import annotations

import json
import logging
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from hive import abi
from hive.build import build_function
from hive.errors import AbiViolation, BuildError, GuestTrap
from hive.sandbox import GuestInstance, Sandbox
from hive.toolchains import zig as zig_toolchain
from tests.sdk.common import (
    ROOT,
    RawGuest,
    build_logged,
    case,
    check_header_lookups,
    check_hello_edge_hive,
    check_hello_greetings,
    check_interface,
    check_invalid_requests,
    check_request_vectors,
    check_response_vectors,
    check_template_greets,
    copy_example,
    copy_template,
    decode,
    guest_log_lines,
    hello_memory_sizes,
    instance,
    mutated_requests,
    req,
)

pytestmark = pytest.mark.slow  # runs the zig compiler

# One guest whose behaviour the request method picks (REBUILD, LOOKUP, CASE or any other: see
# tests/sdk/common.py), so a single module covers the SDK's API; CASE names one of the cases in `special`.
ECHO_ZIG = r"""
const std = @import("std");
const hive = @import("edge_hive");

pub const panic = hive.panic;

fn eql(a: []const u8, b: []const u8) bool {
    return std.mem.eql(u8, a, b);
}

fn putField(res: *hive.Response, s: []const u8) !void {
    var n: [4]u8 = undefined;
    std.mem.writeInt(u32, &n, @intCast(s.len), .little);
    try res.append(&n);
    try res.append(s);
}

fn rd32(b: []const u8, at: usize) u32 {
    return std.mem.readInt(u32, b[at..][0..4], .little);
}

fn rebuild(req: *const hive.Request, alloc: std.mem.Allocator) !hive.Response {
    const b = req.body;
    var res = hive.Response.init(alloc, @intCast(rd32(b, 0)));
    const count = rd32(b, 4);
    var p: usize = 8;
    var i: u32 = 0;
    while (i < count) : (i += 1) {
        const nl = rd32(b, p);
        const vl = rd32(b, p + 4 + nl);
        try res.header(b[p + 4 .. p + 4 + nl], b[p + 8 + nl .. p + 8 + nl + vl]);
        p += 8 + nl + vl;
    }
    const bl = rd32(b, p);
    const body = b[p + 4 .. p + 4 + bl];
    try res.setBody("replaced");
    try res.setBody(body[0 .. bl / 2]);
    try res.append(body[bl / 2 ..]);
    return res;
}

fn lookup(req: *const hive.Request, alloc: std.mem.Allocator) !hive.Response {
    const first = req.header(req.query);
    var res = hive.Response.init(alloc, if (first != null) 200 else 404);
    var it = req.headerValues(req.query);
    while (it.next()) |v| try res.header("x-value", v);
    if (first) |f| try res.setBody(f);
    return res;
}

const Payload = struct { a: u32, s: []const u8, list: []const i32, ok: bool, none: ?u8 = null };

fn special(req: *const hive.Request, alloc: std.mem.Allocator) !hive.Response {
    const q = req.query;
    if (eql(q, "error")) return error.Boom;
    if (eql(q, "status")) return hive.Response.init(alloc, 600);
    if (eql(q, "oom")) {
        const huge = try alloc.alloc(u8, 512 << 20);
        huge[0] = 1;
        return hive.Response.text(alloc, 200, "unreachable");
    }
    if (eql(q, "panic")) @panic("boom");
    if (eql(q, "bad-headers")) {
        var res = hive.Response.init(alloc, 200);
        const big = try alloc.alloc(u8, hive.max_header_value + 1);
        @memset(big, 'v');
        try res.header("x bad", "v");
        try res.header("x-a", "a\r\nb");
        try res.header("", "v");
        try res.header("x-nul", "a\x00b");
        try res.header("x-big", big);
        try res.header("x-max", big[0..hive.max_header_value]);
        var i: usize = 0;
        while (i < 300) : (i += 1) try res.header("x-many", "1");
        try res.print("{d}", .{res.headers.items.len});
        return res;
    }
    if (eql(q, "json")) {
        return hive.Response.json(alloc, 201, Payload{ .a = 1, .s = "é\"\n\x01</", .list = &.{ -1, 2 }, .ok = true });
    }
    if (eql(q, "parse")) {
        const p = req.json(Payload, alloc) catch |e| return hive.Response.text(alloc, 422, @errorName(e));
        return hive.Response.json(alloc, 200, p);
    }
    if (eql(q, "text")) return hive.Response.text(alloc, 200, "plain é");
    if (eql(q, "bytes")) return hive.Response.bytes(alloc, 200, "application/octet-stream", "\x00\xff\x00");
    if (eql(q, "env")) {
        var res = hive.Response.init(alloc, 200);
        try res.print("{s}|{s}|{s}", .{ hive.env("GREETING") orelse "-", hive.env("EMPTY") orelse "-", hive.env("MISSING") orelse "-" });
        return res;
    }
    if (eql(q, "log")) {
        hive.log.debug("debug {d}", .{1});
        hive.log.info("info {s}", .{"two"});
        hive.log.warn("warn", .{});
        hive.log.err("err", .{});
        const long = try alloc.alloc(u8, 20000);
        @memset(long, 'x');
        hive.log.info("{s}", .{long});
        return hive.Response.init(alloc, 204);
    }
    if (eql(q, "time")) {
        var res = hive.Response.init(alloc, 200);
        const a = hive.rfc3339(0);
        const b = hive.rfc3339(951868799);
        const c = hive.rfc3339(4102444800);
        try res.print("{s} {s} {s} {d}", .{ &a, &b, &c, hive.now() });
        return res;
    }
    if (eql(q, "query")) {
        const tmp = hive.Request{ .method = "", .path = "", .query = req.body, .headers = &.{}, .body = "" };
        var res = hive.Response.init(alloc, 200);
        const names = [_][]const u8{ "a", "b", "c", "d", "é" };
        for (names) |n| {
            const v = try tmp.queryParam(alloc, n);
            try res.print("{s}={s};", .{ n, v orelse "(null)" });
        }
        return res;
    }
    if (eql(q, "big")) {
        var res = hive.Response.init(alloc, 200);
        var i: usize = 0;
        while (i < 100000) : (i += 1) try res.print("{d:0>9}\n", .{i});
        return res;
    }
    return hive.Response.text(alloc, 404, "unknown case");
}

pub fn handler(req: *const hive.Request, alloc: std.mem.Allocator) !hive.Response {
    if (eql(req.method, "REBUILD")) return rebuild(req, alloc);
    if (eql(req.method, "LOOKUP")) return lookup(req, alloc);
    if (eql(req.method, "CASE")) return special(req, alloc);
    var res = hive.Response.init(alloc, 200);
    try putField(&res, req.method);
    try putField(&res, req.path);
    try putField(&res, req.query);
    var n: [4]u8 = undefined;
    std.mem.writeInt(u32, &n, @intCast(req.headers.len), .little);
    try res.append(&n);
    for (req.headers) |h| {
        try putField(&res, h.name);
        try putField(&res, h.value);
    }
    try putField(&res, req.body);
    return res;
}

comptime {
    hive.exportHandler(handler);
}
"""


HANDLER_ZIG = """
const std = @import("std");
const hive = @import("edge_hive");
pub const panic = hive.panic;
// OPTIONS

pub fn handler(req: *const hive.Request, alloc: std.mem.Allocator) !hive.Response {
    // BODY
    return hive.Response.text(alloc, 200, req.path);
}

comptime {
    hive.exportHandler(handler);
}
"""


# ---- hello-zig ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hello(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], float]:
    folder = copy_example(tmp_path_factory, "hello-zig", ".zig-cache")
    start = time.perf_counter()
    path, lines = build_logged(folder)
    return path, lines, time.perf_counter() - start


def test_hello_builds(hello: tuple[Path, list[str], float]) -> None:
    path, lines, seconds = hello
    assert path.name == "hello-zig.wasm" and path.is_file()
    assert "-m ziglang build-exe -target wasm32-wasi -OReleaseSmall -fno-entry" in lines[0]
    assert f"-Medge_hive={zig_toolchain.SDK}" in lines[0]
    # The cache stays inside the function folder, and git ignores it.
    assert (path.parent / ".zig-cache" / ".gitignore").read_text().strip().endswith("*")
    print(f"hello-zig: built in {seconds:.1f} s, {path.stat().st_size} bytes")


def test_hello_interface(hello: tuple[Path, list[str], float]) -> None:
    info = check_interface(hello[0])
    assert info["imports"] == {("wasi_snapshot_preview1", "clock_time_get"), ("hive", "log")}
    assert info["size"] < 100_000


def _hello(inst: GuestInstance, body: bytes) -> abi.Response:
    return inst.call(req(b"POST", b"/api/v1/edge/hello-zig", b"", [(b"content-type", b"application/json")], body))


def test_hello_responses(sandbox: Sandbox, hello: tuple[Path, list[str], float],
                         caplog: pytest.LogCaptureFixture) -> None:
    inst = instance(sandbox, hello[0].read_bytes())
    check_hello_edge_hive(_hello(inst, b'{"name": "Edge Hive"}'))
    cases = [
        (b"", "World"), (b"not json", "World"), (b'{"name": 7}', "World"), (b'{"who":"x"}', "World"),
        (b"[1,2]", "World"), (b'"name"', "World"), (b'{"name":null}', "World"), (b'{"name":"x"} trailing', "World"),
        (bytes(range(256)), "World"), (b'{"name":"raw \xff"}', "World"),  # std.json wants UTF-8
        (b'{"name":"a\\"b\\u00e9\\ud83d\\udc1d</"}', 'a"bé🐝</'), ('{"name":"π"}'.encode(), "π"),
        (b'{"name":"\\n\\u0000\\t"}', "\n\x00\t"), (b'{"name":"first","name":"last"}', "last"),
        (b'{"other":{"name":"inner"},"list":[1,"x"],"name":"outer"}', "outer"),
        (b'{"name":"Hello, \\ud83d\\udc1d!"}', "Hello, 🐝!"),
    ]
    check_hello_greetings(inst, _hello, cases)
    assert not [r for r in caplog.records if r.name == "hive.guest"]


def test_memory_stays_bounded(sandbox: Sandbox, hello: tuple[Path, list[str], float]) -> None:
    inst = instance(sandbox, hello[0].read_bytes())
    sizes = hello_memory_sizes(inst, _hello)
    assert sizes[2000] == sizes[100], sizes
    assert sizes[100] <= 4 << 20, sizes  # a 1 MiB stack and a small heap


# ---- the echo guest over the shared vectors ---------------------------------------------------------


@pytest.fixture(scope="module")
def echo_wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("fn") / "echo"
    folder.mkdir()
    (folder / "hive.toml").write_text('[function]\nname = "echo"\nlanguage = "zig"\n')
    (folder / "main.zig").write_text(ECHO_ZIG)
    path = build_function(folder)
    check_interface(path)
    return path.read_bytes()


@pytest.fixture
def echo(sandbox: Sandbox, echo_wasm: bytes) -> RawGuest:
    return RawGuest(sandbox, echo_wasm, env=[b"GREETING=hello=world", b"EMPTY="])


def test_request_vectors_decode_exactly(echo: RawGuest) -> None:
    check_request_vectors(echo.run)


def test_response_vectors_encode_exactly(echo: RawGuest) -> None:
    check_response_vectors(lambda envs: echo.run([req(b"REBUILD", body=env) for env in envs]))


def test_header_lookup_ignores_case(echo: RawGuest) -> None:
    check_header_lookups(echo.run, b"LOOKUP")


def test_invalid_requests_get_400(echo: RawGuest) -> None:
    check_invalid_requests(echo.run)


def test_mutated_requests_never_trap(echo: RawGuest) -> None:
    for env in mutated_requests():
        resp = decode(echo.call(env))
        try:
            decoded = abi.decode_request(env)
        except AbiViolation:
            assert resp.status == 400
        else:
            if decoded.method not in (b"REBUILD", b"LOOKUP", b"CASE"):
                assert (resp.status, resp.body) == (200, env)


def test_failures_become_responses(echo: RawGuest, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    resp = case(echo, "error")
    assert resp.status == 500 and json.loads(resp.body) == {"error": "handler_failed", "message": "Boom"}
    assert "handler failed: Boom" in caplog.text
    resp = case(echo, "status")
    assert resp.status == 500 and json.loads(resp.body)["error"] == "handler_failed"
    resp = case(echo, "oom")  # the 128 MiB store limit makes memory.grow fail
    assert resp.status == 500 and json.loads(resp.body)["error"] == "out_of_memory"
    assert resp.headers == [(b"content-type", b"application/json")]
    assert decode(echo.call(req(body=b"still alive"))).status == 200  # the instance survives all three


def test_panic_traps_and_is_logged(sandbox: Sandbox, echo_wasm: bytes, caplog: pytest.LogCaptureFixture) -> None:
    inst = instance(sandbox, echo_wasm)
    with pytest.raises(GuestTrap):
        inst.call(req(b"CASE", b"/", b"panic"))
    assert "panic: boom" in caplog.text


def test_header_builder_drops_what_the_host_refuses(echo: RawGuest, caplog: pytest.LogCaptureFixture) -> None:
    resp = case(echo, "bad-headers")
    assert resp.status == 200 and resp.body == b"256"
    assert len(resp.headers) == 256 and resp.headers[0] == (b"x-max", b"v" * 16384)
    assert caplog.text.count("dropped response header") == 5 + 45
    assert "more than 256 headers" in caplog.text and "contains CR, LF or NUL" in caplog.text


def test_builders_and_helpers(echo: RawGuest, caplog: pytest.LogCaptureFixture) -> None:
    resp = case(echo, "json")
    assert resp.status == 201 and resp.headers == [(b"content-type", b"application/json")]
    assert json.loads(resp.body) == {"a": 1, "s": 'é"\n\x01</', "list": [-1, 2], "ok": True, "none": None}
    resp = case(echo, "parse", b'{"a":5,"s":"x\\u00e9","list":[3],"ok":false,"extra":[{}]}')
    assert json.loads(resp.body) == {"a": 5, "s": "xé", "list": [3], "ok": False, "none": None}
    resp = case(echo, "parse", b'{"a":"nope"}')
    assert resp.status == 422
    assert case(echo, "text") == abi.Response(200, [(b"content-type", b"text/plain; charset=utf-8")], "plain é".encode())
    assert case(echo, "bytes").body == b"\x00\xff\x00"
    assert case(echo, "env").body == b"hello=world||-"
    a, b, c, now = case(echo, "time").body.decode().split()
    assert (a, b, c) == ("1970-01-01T00:00:00Z", "2000-02-29T23:59:59Z", "2100-01-01T00:00:00Z")
    assert abs(int(now) - time.time()) < 300
    assert case(echo, "query", b"a=1&b=%20x+y&a=2&c&d=%zz&%C3%A9=%E2%82%AC").body == \
        "a=1;b= x y;c=;d=%zz;é=€;".encode()
    big = case(echo, "big").body
    assert len(big) == 1_000_000 and big.endswith(b"000099999\n")
    caplog.clear()
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    assert case(echo, "log").status == 204
    levels = guest_log_lines(caplog)
    assert levels[:4] == [(logging.DEBUG, "debug 1"), (logging.INFO, "info two"), (logging.WARNING, "warn"),
                          (logging.ERROR, "err")]
    assert levels[4][1] == "x" * 8192  # truncated to the host's line limit, not dropped


# ---- the template ------------------------------------------------------------------------------------


def test_template_builds_after_substitution(sandbox: Sandbox, tmp_path: Path) -> None:
    folder = copy_template("zig", tmp_path / "my-fn")
    text = "\n".join(f.read_text(encoding="utf-8") for f in folder.rglob("*") if f.is_file())
    assert "{{" not in text and "edge-hive function build" in (folder / "README.md").read_text()
    assert tomllib.loads((folder / "hive.toml").read_text())["function"] == {"name": "my-fn", "language": "zig"}
    check_template_greets(sandbox, folder, "Zig")


def test_sdk_native_unit_tests(tmp_path: Path) -> None:
    """The SDK's own `test` blocks (dispatch natively, without the wasm exports)."""
    proc = subprocess.run([sys.executable, "-m", "ziglang", "test", str(zig_toolchain.SDK), "--cache-dir",
                           str(tmp_path / "cache")], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "All 3 tests passed" in proc.stderr + proc.stdout


# ---- toolchain errors and the pin ----------------------------------------------------------------------


def test_zig_version_is_pinned() -> None:
    import importlib.metadata

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    pins = [d for d in pyproject["project"]["optional-dependencies"]["test"] if d.startswith("ziglang")]
    assert pins == [f"ziglang=={zig_toolchain.ZIG_VERSION}"]
    assert importlib.metadata.version("ziglang") == zig_toolchain.ZIG_VERSION


def test_build_without_ziglang_names_the_pinned_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "f"\nlanguage = "zig"\n')
    (tmp_path / "main.zig").write_text("")
    monkeypatch.setitem(sys.modules, "ziglang", None)  # find_spec then reports it missing
    with pytest.raises(BuildError, match=re.escape(f"pip install ziglang=={zig_toolchain.ZIG_VERSION}")):
        build_function(tmp_path)


def test_build_reports_compiler_errors(tmp_path: Path) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "bad"\nlanguage = "zig"\n')
    (tmp_path / "main.zig").write_text("const hive = @import(\"edge_hive\");\ncomptime { oops(); }\n")
    with pytest.raises(BuildError, match="oops") as e:
        build_function(tmp_path)
    assert e.value.code == "build_failed"


def test_build_requires_the_sdk_panic_handler(tmp_path: Path) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "nopanic"\nlanguage = "zig"\n')
    (tmp_path / "main.zig").write_text(HANDLER_ZIG.replace("pub const panic = hive.panic;\n", ""))
    with pytest.raises(BuildError, match=re.escape("add `pub const panic = edge_hive.panic;`")):
        build_function(tmp_path)


def test_build_refuses_imports_the_host_lacks(tmp_path: Path) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "printer"\nlanguage = "zig"\n')
    (tmp_path / "main.zig").write_text(HANDLER_ZIG.replace("// BODY", 'std.log.info("default logFn", .{});'))
    with pytest.raises(BuildError, match=r"wasi_snapshot_preview1\.\w+.*which Edge Hive does not provide.*logFn"):
        build_function(tmp_path)
    assert not (tmp_path / "printer.wasm").exists()
    (tmp_path / "main.zig").write_text(HANDLER_ZIG.replace("// BODY", 'std.log.info("routed", .{});').replace(
        "// OPTIONS", "pub const std_options: std.Options = .{ .logFn = hive.logFn };"))
    assert check_interface(build_function(tmp_path))["imports"] == {("hive", "log")}


def test_build_needs_a_root_file(tmp_path: Path) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "empty"\nlanguage = "zig"\n')
    with pytest.raises(BuildError, match="main.zig"):
        build_function(tmp_path)
