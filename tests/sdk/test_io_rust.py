"""The Rust SDK's fetch and KV (edge_hive_wasm::fetch, fetch::Request::send/Pending::wait/wait_any,
edge_hive_wasm::kv): the ABI vectors byte for byte, a lying host, hello-rust's imports, and a real server
(tests/sdk/io_vectors.py has the protocol and the checks)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from hive.build import build_function
from tests.sdk import io_vectors as io
from tests.sdk.common import copy_example

pytestmark = pytest.mark.slow  # cargo

GUEST = Path(__file__).resolve().parent / "guests" / "io" / "rust"
WASI = "wasi_snapshot_preview1"
# Rust's std imports the clock, stdout/stderr (a panic's message), the environment and proc_exit.
STD_IMPORTS = {(WASI, "environ_get"), (WASI, "environ_sizes_get"), (WASI, "fd_write"), (WASI, "proc_exit")}
HELLO_IMPORTS = {("hive", "log"), (WASI, "clock_time_get"), *STD_IMPORTS}


@pytest.fixture(scope="module")
def wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("io") / "io"
    shutil.copytree(GUEST, folder, ignore=shutil.ignore_patterns("target"))
    path = build_function(folder)
    io.check_imports(path, {("hive", "log"), *io.IO_IMPORTS, *STD_IMPORTS})
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
    io.check_imports(build_function(copy_example(tmp_path_factory, "hello-rust", "target")), HELLO_IMPORTS)


def test_on_a_server(wasm: bytes, tmp_path: Path) -> None:
    io.check_on_server(wasm, tmp_path, ["clocks", "stdio", "env"])
