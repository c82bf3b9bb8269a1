"""The four SDKs side by side, for the shared suite (test_sdk_common.py) and the per-language files.

Each language has a test guest (tests/sdk/guests/<lang>: the C driver, the Rust driver, the Zig and
AssemblyScript echo guests) and a hello example (functions/hello*). `Builds` builds them from source on first
use and keeps them for the session. A `Driver` asks one built guest the shared questions (echo, rebuild a
response, look up a header, run a named case) in that guest's own way: a mode for the C driver, a /t/<case>
path for Rust, a method (REBUILD, LOOKUP, CASE) for Zig and AssemblyScript. The C driver also runs natively
(with UB traps) through a stdin protocol, so its tests run twice: c-native and c-wasm.
"""

from __future__ import annotations

import json
import logging
import shutil
import struct
import subprocess
import time
from pathlib import Path

import pytest
import wasmtime

from hive import abi
from hive.build import build_function
from hive.sandbox import Sandbox
from hive.toolchains import assemblyscript as as_toolchain
from tests.sdk import common
from tests.sdk.common import RawGuest, build_c_driver, build_logged, check_interface, copy_example, decode, req

LANGS = ["c", "rust", "zig", "assemblyscript"]
DRIVERS = ["c-native", "c-wasm", "rust", "zig", "assemblyscript"]
GUESTS = Path(__file__).resolve().parent / "guests"
# The drivers' [config] values, as the host hands them over (NAME=value; a value may hold "=" or be empty).
ENV = [b"GREETING=hello=world", b"EMPTY="]
AS_EXPORTS = {**common.ABI_EXPORTS, "_initialize": ([], [])}  # asc's reactor start function

HELLO = {"c": "hello", "rust": "hello-rust", "zig": "hello-zig", "assemblyscript": "hello-as"}
# What a copy of each example leaves out: build outputs and caches.
HELLO_IGNORE = {
    "c": (),
    "rust": ("target",),
    "zig": (".zig-cache",),
    "assemblyscript": ("node_modules", "package-lock.json"),
}

DESCRIBE, BUILD, LOOKUP, JSON_GET, ESCAPE, MISC = range(6)  # the C driver's modes (guests/c/driver.c)


def as_package() -> dict[str, object]:
    """package.json for an AssemblyScript test function: the SDK's exact versions."""
    return {"name": "echo", "version": "0.0.0", "private": True, "devDependencies": as_toolchain.sdk_versions()}


class Builds:
    """Each language's guests, built from source on first use and kept for the session."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self._c_driver: dict[str, tuple[Path, str]] | None = None
        self._drivers: dict[str, Path] = {}
        self._hello: dict[str, tuple[Path, list[str], float]] = {}

    def c_driver(self) -> dict[str, tuple[Path, str]]:
        """The C driver, native and wasm32-wasi: each path with the compiler's stderr."""
        if self._c_driver is None:
            source = (GUESTS / "c" / "driver.c").read_text()
            self._c_driver = build_c_driver(self.tmp.mktemp("csdk"), source, "-mexec-model=reactor", "-s")
        return self._c_driver

    def driver(self, lang: str) -> Path:
        """The language's test guest as a wasm module."""
        if lang == "c":
            return self.c_driver()["wasm"][0]
        if lang not in self._drivers:
            self._drivers[lang] = self._build_driver(lang)
        return self._drivers[lang]

    def _build_driver(self, lang: str) -> Path:
        folder = self.tmp.mktemp("fn") / ("rust-driver" if lang == "rust" else "echo")
        shutil.copytree(GUESTS / lang, folder)
        if lang == "assemblyscript":
            (folder / "package.json").write_text(json.dumps(as_package()))
        path = build_function(folder)
        if lang == "zig":
            check_interface(path)
        elif lang == "assemblyscript":
            info = check_interface(path, AS_EXPORTS)
            assert ("wasi_snapshot_preview1", "fd_write") in info["imports"]  # console.log through WASI
        return path

    def hello(self, lang: str) -> tuple[Path, list[str], float]:
        """functions/<hello example> built the way `edge-hive function build` does it: the module, the lines
        the build printed, and how long it took."""
        if lang not in self._hello:
            folder = copy_example(self.tmp, HELLO[lang], *HELLO_IGNORE[lang])
            start = time.perf_counter()
            path, lines = build_logged(folder)
            self._hello[lang] = path, lines, time.perf_counter() - start
        return self._hello[lang]


class Lang:
    """One language for the shared suite: its name and its builds."""

    def __init__(self, name: str, builds: Builds) -> None:
        self.name = name
        self.builds = builds

    def __repr__(self) -> str:
        return self.name

    @property
    def driver_wasm(self) -> bytes:
        return self.builds.driver(self.name).read_bytes()

    @property
    def hello_wasm(self) -> bytes:
        return self.builds.hello(self.name)[0].read_bytes()


# ---- the case names ------------------------------------------------------------------------------------

# Shared case names the guests spell their own way.
_CASE_NAMES = {
    "zig": {"bad-status": "status"},
    "assemblyscript": {"bad-status": "status", "panic": "abort"},
}


def case_request(lang: str, name: str, body: bytes = b"") -> bytes:
    """The request for one of a Rust, Zig or AssemblyScript guest's named cases (see Driver.cases for C)."""
    if lang == "rust":
        return req(b"PUT", b"/t/" + name.encode(), b"", None, body)
    return req(b"CASE", b"/case", _CASE_NAMES.get(lang, {}).get(name, name).encode(), None, body)


def _replace(envelope: bytes, method: bytes | None = None, path: bytes | None = None) -> bytes:
    r = abi.decode_request(envelope)
    return abi.encode_request(method or r.method, path or r.path, r.query, r.headers, r.body)


# ---- drivers ------------------------------------------------------------------------------------------


class Driver:
    """A built test guest, asked the shared questions. Every method hands back raw response envelopes."""

    name: str
    special_methods: frozenset[bytes] = frozenset()  # methods the guest does not echo

    def run(self, envelopes: list[bytes]) -> list[bytes]:
        """Ordinary requests: each comes back as the body of a 200, re-encoded from the decoded fields."""
        raise NotImplementedError

    def rebuild(self, envelopes: list[bytes]) -> list[bytes]:
        """Each (trusted) response envelope, built again with the SDK's response builder."""
        raise NotImplementedError

    def lookup(self, requests: list[bytes]) -> list[bytes]:
        """Each request's query names a header: its first value as the body, every value as x-value."""
        raise NotImplementedError

    def cases(self, cases: list[tuple[str, bytes]]) -> list[bytes]:
        """Named cases (bad-status, bad-headers, big, oom, log, env), each with a request body."""
        raise NotImplementedError

    def case(self, name: str, body: bytes = b"") -> abi.Response:
        return decode(self.cases([(name, body)])[0])

    def warnings(self, caplog: pytest.LogCaptureFixture) -> list[str]:
        """What the guest logged at warning level so far."""
        raise NotImplementedError

    def echoes_exactly(self, request: abi.Request) -> bool:
        """Whether an ordinary request comes back byte for byte (not with text fields made valid UTF-8)."""
        return True


class NativeGuest:
    """The C driver built natively: stdin ([u32 mode][u32 len][bytes])*, stdout ([u32 len][bytes])*."""

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
            out.append(proc.stdout[pos + 4 : pos + 4 + n])
            pos += 4 + n
        assert len(out) == len(cases)
        return out

    def warnings(self) -> list[str]:
        return [line.removeprefix("[warn] ") for line in self.stderr.splitlines() if line.startswith("[warn] ")]


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

    def warnings(self) -> list[str]:
        return [msg for level, msg in self.log_lines if level == 2]  # HIVE_LOG_WARN


class CDriver(Driver):
    """The C driver, natively or as wasm: the mode it runs in picks the question."""

    def __init__(self, name: str, guest: NativeGuest | WasmGuest) -> None:
        self.name, self.guest = name, guest

    def run(self, envelopes: list[bytes]) -> list[bytes]:
        return self.guest.run([(DESCRIBE, env) for env in envelopes])

    def rebuild(self, envelopes: list[bytes]) -> list[bytes]:
        return self.guest.run([(BUILD, req(path=b"/t", body=env)) for env in envelopes])

    def lookup(self, requests: list[bytes]) -> list[bytes]:
        return self.guest.run([(LOOKUP, env) for env in requests])

    def cases(self, cases: list[tuple[str, bytes]]) -> list[bytes]:
        return self.guest.run([(MISC, req(b"POST", b"/p/q", name.encode(), None, body)) for name, body in cases])

    def warnings(self, caplog: pytest.LogCaptureFixture) -> list[str]:
        return self.guest.warnings()


class SandboxDriver(Driver):
    """A Rust, Zig or AssemblyScript guest on the host's linker (RawGuest), with ENV as its [config]."""

    def __init__(self, name: str, sandbox: Sandbox, wasm: bytes) -> None:
        self.name = name
        self.guest = RawGuest(sandbox, wasm, env=ENV)
        if name != "rust":  # Rust routes its cases by path; the others by method
            self.special_methods = frozenset({b"REBUILD", b"LOOKUP", b"CASE"})

    def run(self, envelopes: list[bytes]) -> list[bytes]:
        return self.guest.run(envelopes)

    def rebuild(self, envelopes: list[bytes]) -> list[bytes]:
        if self.name == "rust":
            return self.guest.run([req(b"POST", b"/t/build", body=env) for env in envelopes])
        return self.guest.run([req(b"REBUILD", body=env) for env in envelopes])

    def lookup(self, requests: list[bytes]) -> list[bytes]:
        if self.name == "rust":
            return self.guest.run([_replace(env, path=b"/t/header") for env in requests])
        return self.guest.run([_replace(env, method=b"LOOKUP") for env in requests])

    def cases(self, cases: list[tuple[str, bytes]]) -> list[bytes]:
        return self.guest.run([case_request(self.name, name, body) for name, body in cases])

    def warnings(self, caplog: pytest.LogCaptureFixture) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]

    def echoes_exactly(self, request: abi.Request) -> bool:
        if self.name != "assemblyscript":
            return True
        # Text fields are strings in AssemblyScript: exact when they are UTF-8, U+FFFD otherwise.
        try:
            for f in (request.method, request.path, request.query, *(x for h in request.headers for x in h)):
                f.decode("utf-8")
        except UnicodeDecodeError:
            return False
        return True


def make_driver(name: str, builds: Builds, sandbox: Sandbox) -> Driver:
    """A fresh driver: c-native, c-wasm, rust, zig or assemblyscript."""
    if name == "c-native":
        return CDriver(name, NativeGuest(builds.c_driver()["native"][0]))
    if name == "c-wasm":
        return CDriver(name, WasmGuest(builds.c_driver()["wasm"][0]))
    return SandboxDriver(name, sandbox, builds.driver(name).read_bytes())
