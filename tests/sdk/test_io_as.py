"""The AssemblyScript SDK's fetch and KV (fetch(url, init) → FetchResponse, fetchSend / PendingFetch.wait /
fetchWaitAny, kv.get/set/setBytes/delete/list/incr): the ABI vectors byte for byte, a lying host, hello-as's
imports, and a real server (tests/sdk/io_vectors.py has the protocol and the checks)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from hive.build import build_function
from hive.toolchains import assemblyscript as as_toolchain
from tests.sdk import io_vectors as io
from tests.sdk.common import copy_example

pytestmark = pytest.mark.slow  # runs npm and the AssemblyScript compiler

GUEST = Path(__file__).resolve().parent / "guests" / "io" / "assemblyscript"
HELLO_IMPORTS = {("hive", "log"), ("wasi_snapshot_preview1", "clock_time_get")}


@pytest.fixture(scope="module")
def wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    folder = tmp_path_factory.mktemp("io") / "io"
    shutil.copytree(GUEST, folder, ignore=shutil.ignore_patterns("node_modules", "package-lock.json"))
    package = {"name": "io", "version": "0.0.0", "private": True, "devDependencies": as_toolchain.sdk_versions()}
    (folder / "package.json").write_text(json.dumps(package))
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
    # A result between the free memory and 1 GiB makes AssemblyScript's allocator abort (a trap, never a
    # read out of bounds); beyond 1 GiB the SDK answers out_of_memory without allocating.
    io.check_lying_host(host, huge_ok=False)


def test_hello_imports_unchanged(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = copy_example(tmp_path_factory, "hello-as", "node_modules", "package-lock.json")
    io.check_imports(build_function(folder), HELLO_IMPORTS)


def test_on_a_server(wasm: bytes, tmp_path: Path) -> None:
    io.check_on_server(wasm, tmp_path, [])
