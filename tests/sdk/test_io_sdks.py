"""Every SDK's fetch and KV calls, one suite over the four languages: the ABI vectors byte for byte, a lying
host, hello's imports (I/O adds none), and a real server (tests/sdk/io_vectors.py has the protocol and the
checks). The calls each SDK offers: C hive_fetch* and hive_kv_*; Rust edge_hive_wasm::fetch
(Request::send, Pending::wait, wait_any) and edge_hive_wasm::kv; Zig hive.fetch, fetchSend, Pending.wait,
fetchWaitAny and hive.kv.*; AssemblyScript fetch(url, init) returning a FetchResponse, fetchSend,
PendingFetch.wait, fetchWaitAny and kv.get/set/setBytes/delete/list/incr.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest

from hive.build import build_function
from hive.toolchains import assemblyscript as as_toolchain
from tests.sdk import io_vectors as io
from tests.sdk.common import copy_example
from tests.sdk.langs import HELLO, HELLO_IGNORE

pytestmark = pytest.mark.slow  # runs every SDK's toolchain: zig, cargo, npm and asc

GUESTS = Path(__file__).resolve().parent / "guests" / "io"
WASI = "wasi_snapshot_preview1"
# Rust's std imports the clock, stdout/stderr (a panic's message), the environment and proc_exit.
RUST_STD = {(WASI, "environ_get"), (WASI, "environ_sizes_get"), (WASI, "fd_write"), (WASI, "proc_exit")}
HELLO_BASE = {("hive", "log"), (WASI, "clock_time_get")}


@dataclass(frozen=True)
class IoLang:
    guest: str  # the folder under tests/sdk/guests/io
    ignore: tuple[str, ...]  # build outputs and caches a copy leaves out
    std_imports: frozenset[tuple[str, str]] = frozenset()  # what the language's runtime imports as well
    wasi: tuple[str, ...] = ()  # the WASI groups the I/O guest needs on a server
    huge_ok: bool = True  # see io.check_lying_host


LANGS = {
    "c": IoLang("c", ()),
    "rust": IoLang("rust", ("target",), frozenset(RUST_STD), ("clocks", "stdio", "env")),
    "zig": IoLang("zig", (".zig-cache",)),
    # A result between the free memory and 1 GiB makes AssemblyScript's allocator abort (a trap, never a
    # read out of bounds); beyond 1 GiB the SDK answers out_of_memory without allocating.
    "assemblyscript": IoLang("assemblyscript", ("node_modules", "package-lock.json"), huge_ok=False),
}


@pytest.fixture(scope="module", params=list(LANGS))
def lang(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def wasm(lang: str, tmp_path_factory: pytest.TempPathFactory) -> bytes:
    spec = LANGS[lang]
    folder = tmp_path_factory.mktemp("io") / "io"
    shutil.copytree(GUESTS / spec.guest, folder, ignore=shutil.ignore_patterns(*spec.ignore))
    if lang == "assemblyscript":  # the SDK's exact versions
        package = {"name": "io", "version": "0.0.0", "private": True, "devDependencies": as_toolchain.sdk_versions()}
        (folder / "package.json").write_text(json.dumps(package))
    path = build_function(folder)
    io.check_imports(path, {("hive", "log"), *io.IO_IMPORTS, *spec.std_imports})
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


def test_lying_host(lang: str, host: io.IoHost) -> None:
    io.check_lying_host(host, huge_ok=LANGS[lang].huge_ok)


def test_hello_imports_unchanged(lang: str, tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = copy_example(tmp_path_factory, HELLO[lang], *HELLO_IGNORE[lang])
    io.check_imports(build_function(folder), {*HELLO_BASE, *LANGS[lang].std_imports})


def test_on_a_server(lang: str, wasm: bytes, tmp_path: Path) -> None:
    io.check_on_server(wasm, tmp_path, list(LANGS[lang].wasi))
