"""The Zig SDK (hive/sdk/zig/edge_hive.zig): hello-zig's build, the echo guest's error unions and builders,
the SDK's own tests, the version pin and toolchain errors. What every SDK shares (the ABI vectors, failures,
logging, [config], panics, hello's answers, the template) is in test_sdk_common.py.

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
from hive.errors import BuildError
from hive.sandbox import Sandbox
from hive.toolchains import zig as zig_toolchain
from tests.sdk.common import ROOT, RawGuest, case, check_interface, decode, req
from tests.sdk.langs import ENV, Builds

pytestmark = pytest.mark.slow  # runs the zig compiler

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
def hello(sdk_builds: Builds) -> tuple[Path, list[str], float]:
    return sdk_builds.hello("zig")


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


# ---- the echo guest: error unions and builders ------------------------------------------------------


@pytest.fixture(scope="module")
def echo_wasm(sdk_builds: Builds) -> bytes:
    """tests/sdk/guests/zig: the request method picks what it does (see tests/sdk/common.py)."""
    return sdk_builds.driver("zig").read_bytes()


@pytest.fixture
def echo(sandbox: Sandbox, echo_wasm: bytes) -> RawGuest:
    return RawGuest(sandbox, echo_wasm, env=ENV)


def test_failures_become_responses(echo: RawGuest, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    resp = case(echo, "error")
    assert resp.status == 500 and json.loads(resp.body) == {"error": "handler_failed", "message": "Boom"}
    assert "handler failed: Boom" in caplog.text
    assert decode(echo.call(req(body=b"still alive"))).status == 200  # the instance survives


def test_builders_and_helpers(echo: RawGuest) -> None:
    resp = case(echo, "json")
    assert resp.status == 201 and resp.headers == [(b"content-type", b"application/json")]
    assert json.loads(resp.body) == {"a": 1, "s": 'é"\n\x01</', "list": [-1, 2], "ok": True, "none": None}
    resp = case(echo, "parse", b'{"a":5,"s":"x\\u00e9","list":[3],"ok":false,"extra":[{}]}')
    assert json.loads(resp.body) == {"a": 5, "s": "xé", "list": [3], "ok": False, "none": None}
    resp = case(echo, "parse", b'{"a":"nope"}')
    assert resp.status == 422
    assert case(echo, "text") == abi.Response(
        200, [(b"content-type", b"text/plain; charset=utf-8")], "plain é".encode()
    )
    assert case(echo, "bytes").body == b"\x00\xff\x00"
    a, b, c, now = case(echo, "time").body.decode().split()
    assert (a, b, c) == ("1970-01-01T00:00:00Z", "2000-02-29T23:59:59Z", "2100-01-01T00:00:00Z")
    assert abs(int(now) - time.time()) < 300
    assert case(echo, "query", b"a=1&b=%20x+y&a=2&c&d=%zz&%C3%A9=%E2%82%AC").body == "a=1;b= x y;c=;d=%zz;é=€;".encode()


# ---- the SDK's own tests -------------------------------------------------------------------------------


def test_sdk_native_unit_tests(tmp_path: Path) -> None:
    """The SDK's own `test` blocks (dispatch natively, without the wasm exports)."""
    proc = subprocess.run(
        [sys.executable, "-m", "ziglang", "test", str(zig_toolchain.SDK), "--cache-dir", str(tmp_path / "cache")],
        capture_output=True,
        text=True,
        timeout=600,
    )
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
    (tmp_path / "main.zig").write_text(
        HANDLER_ZIG.replace("// BODY", 'std.log.info("routed", .{});').replace(
            "// OPTIONS", "pub const std_options: std.Options = .{ .logFn = hive.logFn };"
        )
    )
    assert check_interface(build_function(tmp_path))["imports"] == {("hive", "log")}


def test_build_needs_a_root_file(tmp_path: Path) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "empty"\nlanguage = "zig"\n')
    with pytest.raises(BuildError, match="main.zig"):
        build_function(tmp_path)


def test_native_io_calls_are_no_io_errors(tmp_path: Path) -> None:
    """Natively (zig test, no host) every fetch and KV call is an error value: no_io."""
    guest = Path(__file__).resolve().parent / "guests" / "io" / "zig"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ziglang",
            "test",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--dep",
            "edge_hive",
            f"-Mroot={guest / 'native_test.zig'}",
            f"-Medge_hive={zig_toolchain.SDK}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "All 1 tests passed" in proc.stderr + proc.stdout, proc.stderr
