"""One module inspection (issue 10): every build checks what it produced with the check deploy uses,
so a module the server would refuse fails at build time, with the server's message and code."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from hive.build import C_SDK_DIR, WASM_CFLAGS, build_function
from hive.errors import BuildError, HiveError
from hive.manifest import WASI_GROUPS, Manifest
from hive.registry import sha256_hex
from hive.sandbox import Sandbox
from tests.support import ROOT

pytestmark = pytest.mark.slow

ALLOWED = Manifest(wasi=list(WASI_GROUPS)).allowed_wasi_imports()

SDK_HELLO = (
    '#include "edge_hive.h"\nhive_response *handler(const hive_request *r) { return hive_response_text(200, "hi"); }\n'
)


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    s = Sandbox(tmp_path / "cache")
    yield s
    s.close()


def c_function(folder: Path, source: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "hive.toml").write_text('[function]\nname = "f"\nlanguage = "c"\n')
    (folder / "f.c").write_text(source)
    return folder


def server_refusal(sandbox: Sandbox, wasm: bytes) -> HiveError:
    with pytest.raises(HiveError) as e:
        sandbox.compile(wasm, sha256_hex(wasm), ALLOWED)
    return e.value


def raw_c_module(folder: Path, source: str) -> bytes:
    """The module the C build would produce, compiled without the build's check (what a deploy sees)."""
    (folder / "raw.c").write_text(source)
    cmd = [
        sys.executable,
        "-m",
        "ziglang",
        "cc",
        *WASM_CFLAGS,
        "-I",
        str(C_SDK_DIR),
        "-o",
        str(folder / "raw.wasm"),
        str(folder / "raw.c"),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr
    return (folder / "raw.wasm").read_bytes()


def test_deploy_and_load_use_the_one_inspection() -> None:
    from hive.sandbox import engine, inspect

    assert engine.check_interface is inspect.check_interface
    assert engine.check_wasm_header is inspect.check_wasm_header


def test_c_build_without_the_abi_fails_with_the_deploy_message(sandbox: Sandbox, tmp_path: Path) -> None:
    source = "int answer(void) { return 42; }\n"  # no SDK: no hive_alloc, hive_handle, hive_abi_v1
    refused = server_refusal(sandbox, raw_c_module(tmp_path, source))
    assert refused.code == "invalid_module" and "does not export" in refused.message
    folder = c_function(tmp_path / "f", source)
    with pytest.raises(BuildError) as e:
        build_function(folder)
    assert refused.message in e.value.message
    assert (e.value.code, e.value.extra["cause"]) == ("build_failed", "invalid_module")
    assert not (folder / "f.wasm").exists()  # a module that can't deploy is no build result


def test_c_build_with_an_import_no_host_provides(sandbox: Sandbox, tmp_path: Path) -> None:
    source = '__attribute__((import_module("env"), import_name("secret"))) int secret(void);\n' + SDK_HELLO.replace(
        '"hi"', 'secret() ? "a" : "b"'
    )
    refused = server_refusal(sandbox, raw_c_module(tmp_path, source))
    assert (refused.code, refused.extra["import_name"]) == ("forbidden_import", "env.secret")
    with pytest.raises(BuildError, match=r"f\.wasm imports env\.secret, which Edge Hive does not provide: .*hive_log"):
        build_function(c_function(tmp_path / "f", source))


def test_c_build_with_a_host_import_of_the_wrong_type(sandbox: Sandbox, tmp_path: Path) -> None:
    source = (
        '__attribute__((import_module("hive"), import_name("log"))) void bad_log(long long);\n'
        + SDK_HELLO.replace("return", "bad_log(1); return")
    )
    refused = server_refusal(sandbox, raw_c_module(tmp_path, source))
    assert refused.code == "invalid_module" and "import hive.log has the wrong type" in refused.message
    with pytest.raises(BuildError) as e:
        build_function(c_function(tmp_path / "f", source))
    assert refused.message in e.value.message


def test_c_build_of_a_good_function_passes(sandbox: Sandbox, tmp_path: Path) -> None:
    path = build_function(c_function(tmp_path / "f", SDK_HELLO))
    wasm = path.read_bytes()
    sandbox.compile(wasm, sha256_hex(wasm), frozenset())


def test_rust_build_without_the_abi_fails_with_the_deploy_message(tmp_path: Path) -> None:
    folder = tmp_path / "plain"
    shutil.copytree(ROOT / "functions" / "hello-rust", folder, ignore=shutil.ignore_patterns("target", "*.wasm"))
    (folder / "hive.toml").write_text('[function]\nname = "plain"\nlanguage = "rust"\n')
    (folder / "src" / "lib.rs").write_text('#[no_mangle]\npub extern "C" fn answer() -> i32 { 42 }\n')
    with pytest.raises(BuildError) as e:
        build_function(folder)
    assert (
        "plain.wasm: the module does not export 'hive_alloc': it is not an Edge Hive ABI v1 module" in e.value.message
    )
    assert "#[edge_function]" in e.value.message
    assert not (folder / "plain.wasm").exists()


def test_a_build_over_the_function_limit_fails_with_the_deploy_message(sandbox: Sandbox, tmp_path: Path) -> None:
    # 60,000 one-line functions, each kept by `used` (volatile) so the optimiser cannot fold them.
    source = (
        SDK_HELLO
        + "".join(f"int f{i}(void) {{ return {i}; }}\n" for i in range(60_000))
        + (
            "int (*const used[])(void) = {" + ",".join(f"f{i}" for i in range(60_000)) + "};\n"
            '__attribute__((export_name("touch"))) int touch(int i) { return used[i](); }\n'
        )
    )
    folder = c_function(tmp_path / "f", source)
    with pytest.raises(BuildError) as e:
        build_function(folder)
    assert "more than max_module_functions (50000)" in e.value.message
    assert e.value.extra["cause"] == "module_too_complex"
