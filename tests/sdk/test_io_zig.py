"""The Zig SDK's fetch and KV (hive.fetch, hive.fetchSend / Pending.wait / hive.fetchWaitAny, hive.kv.*):
the ABI vectors byte for byte, a lying host, hello-zig's imports, and a real server
(tests/sdk/io_vectors.py has the protocol and the checks)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from hive.build import build_function
from hive.toolchains import zig
from tests.sdk import io_vectors as io
from tests.sdk.common import copy_example

pytestmark = pytest.mark.slow  # runs the zig compiler

GUEST = Path(__file__).resolve().parent / "guests" / "io" / "zig"
HELLO_IMPORTS = {("hive", "log"), ("wasi_snapshot_preview1", "clock_time_get")}


@pytest.fixture(scope="module")
def wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("io") / "io"
    shutil.copytree(GUEST, folder, ignore=shutil.ignore_patterns(".zig-cache"))
    path = build_function(folder)
    io.check_imports(path, {("hive", "log"), *io.IO_IMPORTS})
    return path.read_bytes()


@pytest.fixture
def host(wasm: bytes) -> io.IoHost:
    return io.IoHost(wasm)


def test_fetch_request_vectors(host: io.IoHost) -> None:
    io.check_fetch_requests(host)


def test_kv_op_vectors(host: io.IoHost) -> None:
    io.check_kv_ops(host)


def test_result_vectors(host: io.IoHost) -> None:
    io.check_results(host)


def test_refused_by_the_sdk(host: io.IoHost) -> None:
    io.check_guest_errors(host)


def test_lying_host(host: io.IoHost) -> None:
    io.check_lying_host(host)


def test_hello_imports_unchanged(tmp_path_factory: pytest.TempPathFactory) -> None:
    io.check_imports(build_function(copy_example(tmp_path_factory, "hello-zig", ".zig-cache")), HELLO_IMPORTS)


def test_on_a_server(wasm: bytes, tmp_path: Path) -> None:
    io.check_on_server(wasm, tmp_path, [])


def test_native_no_io(tmp_path: Path) -> None:
    """Natively (zig test, no host) every call is an error value: no_io."""
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
            f"-Mroot={GUEST / 'native_test.zig'}",
            f"-Medge_hive={zig.SDK}",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "All 1 tests passed" in proc.stderr + proc.stdout, proc.stderr
