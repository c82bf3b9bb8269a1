"""The AssemblyScript SDK (hive/sdk/assemblyscript): hello-as's build, the echo guest's failures and builders,
the version pins and toolchain errors. What every SDK shares (the ABI vectors, headers, logging, [config],
aborts, hello's answers, the template) is in test_sdk_common.py.

Everything is built with hive.build.build_function (npm install, then asc), the way
`edge-hive function build` does it, and run through the real host sandbox. Node and npm must be
installed (scripts/toolchains/assemblyscript.sh); the npm registry must be reachable for the installs.
"""

from __future__ import annotations

import json
import logging
import re
import time
from pathlib import Path

import pytest

from hive import abi
from hive.build import build_function
from hive.errors import BuildError, GuestTrap
from hive.sandbox import Sandbox
from hive.toolchains import assemblyscript as as_toolchain
from tests.sdk import common
from tests.sdk.common import ROOT, RawGuest, case, copy_template, instance, req
from tests.sdk.langs import AS_EXPORTS, ENV, Builds, as_package

pytestmark = pytest.mark.slow  # runs npm and the AssemblyScript compiler


def check_interface(path: Path) -> dict[str, object]:
    return common.check_interface(path, AS_EXPORTS)


# ---- hello-as -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hello(sdk_builds: Builds) -> tuple[Path, list[str], float]:
    return sdk_builds.hello("assemblyscript")


def test_hello_builds(hello: tuple[Path, list[str], float]) -> None:
    path, lines, seconds = hello
    assert path.name == "hello-as.wasm" and path.is_file()
    assert any(line.startswith("installing npm packages") for line in lines)
    assert any("npm install --no-package-lock" in line for line in lines)
    assert any("assemblyscript/bin/asc.js node_modules/.edge-hive/entry.ts" in line for line in lines)
    folder = path.parent
    assert not (folder / "package-lock.json").exists()
    # The SDK is the installed hive package's copy.
    sdk = folder / "node_modules" / "edge-hive" / "assembly" / "edge-hive.ts"
    assert sdk.read_bytes() == (as_toolchain.SDK_DIR / "assembly" / "edge-hive.ts").read_bytes()
    print(f"hello-as: built in {seconds:.1f} s (npm install included), {path.stat().st_size} bytes")


def test_rebuild_skips_npm(hello: tuple[Path, list[str], float]) -> None:
    lines: list[str] = []
    start = time.perf_counter()
    build_function(hello[0].parent, echo=lines.append)
    assert not any("npm" in line for line in lines)
    print(f"hello-as: rebuilt in {time.perf_counter() - start:.1f} s")


def test_hello_interface(hello: tuple[Path, list[str], float]) -> None:
    info = check_interface(hello[0])
    assert info["imports"] == {("wasi_snapshot_preview1", "clock_time_get"), ("hive", "log")}
    assert info["size"] < 100_000


# ---- the echo guest: failures and builders ------------------------------------------------------------


@pytest.fixture(scope="module")
def echo_wasm(sdk_builds: Builds) -> bytes:
    """tests/sdk/guests/assemblyscript: the same protocol as the Zig echo guest (see tests/sdk/common.py)."""
    return sdk_builds.driver("assemblyscript").read_bytes()


@pytest.fixture
def echo(sandbox: Sandbox, echo_wasm: bytes) -> RawGuest:
    return RawGuest(sandbox, echo_wasm, env=ENV)


def test_failures(sandbox: Sandbox, echo_wasm: bytes, echo: RawGuest, caplog: pytest.LogCaptureFixture) -> None:
    """The log line for a bad status (the response itself: test_sdk_common.py), and running out of memory,
    which aborts and traps: there are no exceptions in AssemblyScript."""
    case(echo, "status")
    assert "handler returned status 600" in caplog.text
    inst = instance(sandbox, echo_wasm)
    with pytest.raises(GuestTrap):
        inst.call(req(b"CASE", b"/", b"oom"))


def test_builders_and_helpers(echo: RawGuest) -> None:
    resp = case(echo, "json")
    assert resp.status == 201 and resp.headers == [(b"content-type", b"application/json")]
    assert json.loads(resp.body) == {"a": 1, "s": 'é"\n\x01</🐝', "list": [-1, 2], "ok": True}
    resp = case(echo, "parse", b'{"a":5,"s":"x\\u00e9","list":[3],"ok":false}')
    assert json.loads(resp.body) == {"a": 5, "s": "xé", "list": [3], "ok": False}
    assert case(echo, "parse", b'{"a":5,').status == 422
    assert case(echo, "object", b' {"b":1,"a":{"c":[]}}').body == b"b,a"
    for body in (b"[1]", b"1", b'"x"', b"{", b""):
        assert case(echo, "object", body).status == 422
    assert case(echo, "text") == abi.Response(
        200, [(b"content-type", b"text/plain; charset=utf-8")], "plain é".encode()
    )
    assert case(echo, "body-text", b"ok \xff\xc3 \xe2\x82x").body == "ok \ufffd\ufffd \ufffdx".encode()
    assert case(echo, "bytes").body == b"\x00\xff\x00"
    a, b, c, now, date_now = case(echo, "time").body.decode().split()
    assert (a, b, c) == ("1970-01-01T00:00:00Z", "2000-02-29T23:59:59Z", "2100-01-01T00:00:00Z")
    assert abs(int(now) - time.time()) < 300 and abs(float(date_now) - time.time()) < 300
    assert case(echo, "random").body == b"ok"
    assert (
        case(echo, "query", b"a=1&b=%20x+y&a=2&c&d=%zz&%C3%A9=%E2%82%AC").body
        == "a=1;b= x y;c=;d=%zz;é=€;zz=(null);".encode()
    )
    resp = case(echo, "headers")
    assert resp.body == b"yn" and resp.headers == [(b"a", b"1"), (b"a", b"3"), (b"b", b"4")]


# ---- the template ------------------------------------------------------------------------------------


def test_template_pins_the_sdk_versions(tmp_path: Path) -> None:
    """The template's package.json (the rest of the template: test_sdk_common.py)."""
    folder = copy_template("assemblyscript", tmp_path / "my-fn")
    pkg = json.loads((folder / "package.json").read_text())
    assert pkg["name"] == "my-fn" and pkg["devDependencies"] == as_toolchain.sdk_versions()


def test_examples_pin_the_sdk_versions() -> None:
    pkg = json.loads((ROOT / "functions" / "hello-as" / "package.json").read_text())
    assert pkg["devDependencies"] == as_toolchain.sdk_versions()
    assert all(re.fullmatch(r"\d+\.\d+\.\d+", v) for v in as_toolchain.sdk_versions().values())  # exact pins


# ---- toolchain errors ---------------------------------------------------------------------------------


def test_build_without_node_names_the_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "f"\nlanguage = "assemblyscript"\n')
    monkeypatch.setattr(as_toolchain.shutil, "which", lambda tool: None)
    with pytest.raises(BuildError, match=re.escape("apt-get install nodejs npm")):
        build_function(tmp_path)


def test_build_refuses_imports_the_host_lacks(tmp_path: Path, hello: tuple[Path, list[str], float]) -> None:
    folder = tmp_path / "envy"
    (folder / "assembly").mkdir(parents=True)
    (folder / "hive.toml").write_text('[function]\nname = "envy"\nlanguage = "assemblyscript"\n')
    (folder / "package.json").write_text(json.dumps(as_package()))
    (folder / "assembly" / "index.ts").write_text(
        'import { Request, Response, serve } from "edge-hive";\n'
        '@external("env", "secret") declare function secret(): i32;\n'
        "serve((req: Request): Response => Response.text(secret().toString()));\n"
    )
    with pytest.raises(BuildError, match=r"imports env\.secret, which Edge Hive does not provide"):
        build_function(folder)
    assert not (folder / "envy.wasm").exists()


def test_no_handler_and_trace(
    sandbox: Sandbox, tmp_path: Path, hello: tuple[Path, list[str], float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="hive.guest")
    folder = tmp_path / "idle"
    (folder / "assembly").mkdir(parents=True)
    (folder / "hive.toml").write_text('[function]\nname = "idle"\nlanguage = "assemblyscript"\n')
    (folder / "package.json").write_text(json.dumps(as_package()))
    (folder / "assembly" / "index.ts").write_text('trace("starting", 2, 1, 2.5);\n')
    path = build_function(folder)
    check_interface(path)
    inst = instance(sandbox, path.read_bytes())  # _initialize runs the top-level code
    assert "trace: starting 1.0, 2.5" in caplog.text
    resp = inst.call(req())
    assert resp.status == 500 and json.loads(resp.body)["error"] == "handler_failed"


def test_build_needs_package_json_and_entry(tmp_path: Path) -> None:
    (tmp_path / "hive.toml").write_text('[function]\nname = "f"\nlanguage = "assemblyscript"\n')
    with pytest.raises(BuildError, match="package.json"):
        build_function(tmp_path)
    (tmp_path / "package.json").write_text(json.dumps(as_package()))
    with pytest.raises(BuildError, match="assembly/index.ts"):
        build_function(tmp_path)
