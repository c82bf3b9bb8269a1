"""What the SDK tests share: the ABI vectors, envelope builders, the C driver build, guests run through the
real host sandbox, interface and allowed-import checks, the shared vector checks and the hello/template
helpers. Fixtures are in tests/sdk/conftest.py; the languages side by side in tests/sdk/langs.py.

The Zig and AssemblyScript echo guests (tests/sdk/guests/) speak the same protocol, picked by the request method:
  any ordinary method  the request, re-encoded from the decoded fields, as the body
  REBUILD              the body is a (trusted) response envelope: rebuilt with the builder API
  LOOKUP               the query names a header: first value as the body, every value as x-value
  CASE                 the query names one of the guest's special cases (see `case`)
"""

from __future__ import annotations

import json
import random
import re
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
import wasmtime

from hive import abi
from hive.build import C_SDK_DIR, build_function
from hive.errors import AbiViolation
from hive.manifest import WASI_GROUPS, Manifest
from hive.registry import sha256_hex
from hive.sandbox import GuestContext, GuestInstance, GuestLimits, Sandbox, host

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "hive" / "sdk" / "abi_vectors.json").read_text(encoding="utf-8"))
ALLOWED = Manifest(wasi=list(WASI_GROUPS)).allowed_wasi_imports()  # every capability granted
ABI_EXPORTS = {
    "hive_abi_v1": ([], []),
    "hive_alloc": (["i32"], ["i32"]),
    "hive_free": (["i32", "i32"], []),
    "hive_handle": (["i32", "i32"], ["i64"]),
}
MAX_BODY = 6 << 20
WARN = ["-Wall", "-Wextra", "-Werror"]

# Sends a batch of envelopes to a guest and hands back the raw response envelopes, in order.
Run = Callable[[list[bytes]], list[bytes]]


# ---- envelopes -------------------------------------------------------------------------------------


def req(
    method: bytes = b"GET",
    path: bytes = b"/",
    query: bytes = b"",
    headers: abi.Headers | None = None,
    body: bytes = b"",
) -> bytes:
    return abi.encode_request(method, path, query, headers or [], body)


def decode(raw: bytes) -> abi.Response:
    return abi.decode_response(raw, MAX_BODY)


def mutate(rng: random.Random, env: bytes) -> bytes:
    b = bytearray(env)
    match rng.randrange(5):
        case 0:
            return bytes(b[: rng.randrange(len(b))])
        case 1:
            return env + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        case 2:  # a lying length or count at a word boundary
            pos = rng.randrange(0, max(1, len(b) - 3))
            b[pos : pos + 4] = struct.pack("<I", rng.choice([0, 1, 7, 255, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
        case 3:
            b[rng.randrange(len(b))] = rng.randrange(256)
        case _:
            del b[rng.randrange(len(b))]
    return bytes(b)


def mutated_requests() -> list[bytes]:
    """600 request vectors with one mutation each, always the same ones."""
    rng = random.Random(1729)
    seeds = [bytes.fromhex(v["envelope_hex"]) for v in VECTORS["requests"] if len(v["envelope_hex"]) < 1000]
    return [mutate(rng, rng.choice(seeds)) for _ in range(600)]


# ---- the ABI vectors -------------------------------------------------------------------------------


def check_request_vectors(run: Run) -> None:
    """Every request vector comes back as the body of a 200, re-encoded from what the guest decoded."""
    vectors = VECTORS["requests"]
    envs = [bytes.fromhex(v["envelope_hex"]) for v in vectors]
    for v, env, out in zip(vectors, envs, run(envs), strict=True):
        resp = decode(out)
        assert (resp.status, resp.body) == (200, env), v["name"]


def check_response_vectors(rebuild: Run) -> None:
    """`rebuild` has the guest build each response envelope with its builder API: the bytes must match."""
    vectors = VECTORS["responses"]
    envs = [bytes.fromhex(v["envelope_hex"]) for v in vectors]
    for v, env, out in zip(vectors, envs, rebuild(envs), strict=True):
        assert out == env, v["name"]


def check_header_lookups(lookup: Run) -> None:
    """Each request vector, its query naming one of its headers (or one it lacks), as written and upper-cased:
    the first value is the body, every value an x-value header."""
    cases, expected = [], []
    for v in VECTORS["requests"]:
        decoded = abi.decode_request(bytes.fromhex(v["envelope_hex"]))
        names = {n for n, _ in v["headers"]} | {"absent"}
        for name in sorted(names) + [n.upper() for n in sorted(names)]:
            cases.append(req(decoded.method, decoded.path, name.encode(), decoded.headers, decoded.body))
            expected.append([val.encode() for n, val in v["headers"] if n.lower() == name.lower()])
    for out, values in zip(lookup(cases), expected, strict=True):
        resp = decode(out)
        assert resp.status == (200 if values else 404)
        assert resp.body == (values[0] if values else b"")
        assert [val for _, val in resp.headers] == values


def check_echoed_or_rejected(env: bytes, resp: abi.Response) -> None:
    """An envelope the ABI refuses gets a 400; any other comes back as the body of a 200."""
    try:
        abi.decode_request(env)
    except AbiViolation:
        assert resp.status == 400
    else:
        assert (resp.status, resp.body) == (200, env)


# ---- the C driver ------------------------------------------------------------------------------------


def zig_cc(*args: str | Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "ziglang", "cc", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    return proc


def build_c_driver(folder: Path, source: str, *wasm_flags: str) -> dict[str, tuple[Path, str]]:
    """driver.c built natively (with UB traps) and for wasm32-wasi: each path with the compiler's stderr."""
    src = folder / "driver.c"
    src.write_text(source)
    native = zig_cc(
        "-std=c11",
        "-O1",
        "-g",
        "-fsanitize=undefined",
        "-fsanitize-trap=undefined",
        *WARN,
        "-I",
        C_SDK_DIR,
        "-o",
        folder / "driver",
        src,
    )
    wasm = zig_cc("--target=wasm32-wasi", "-O2", *wasm_flags, *WARN, "-I", C_SDK_DIR, "-o", folder / "driver.wasm", src)
    return {"native": (folder / "driver", native.stderr), "wasm": (folder / "driver.wasm", wasm.stderr)}


# ---- guests in the real host sandbox -------------------------------------------------------------


def instance(
    sandbox: Sandbox, wasm: bytes, env: list[bytes] | None = None, limits: GuestLimits | None = None, name: str = "fn"
) -> GuestInstance:
    compiled = sandbox.compile(wasm, sha256_hex(wasm), ALLOWED)  # also refuses forbidden imports
    return GuestInstance(sandbox, compiled, limits or GuestLimits(), GuestContext(name, env=env or []))


class RawGuest:
    """One instance on the host's linker (so the host's import check and host functions), called the
    way GuestInstance does, but handing back the raw response envelope for byte-exact checks."""

    def __init__(self, sandbox: Sandbox, wasm: bytes, env: list[bytes] | None = None) -> None:
        compiled = sandbox.compile(wasm, sha256_hex(wasm), ALLOWED)
        self.ctx = GuestContext("echo", env=env or [])
        self.store = host.new_store(sandbox.engine)  # the host linker has WASI: set_wasi or abort
        self.store.set_limits(memory_size=128 << 20)
        self.store.set_epoch_deadline(60_000)
        host.set_current(self.ctx)
        instance = compiled.pre.instantiate(self.store)
        self.exports = instance.exports(self.store)
        if compiled.has_initialize:
            self.exports["_initialize"](self.store)
        self.memory = self.exports["memory"]
        self.ptr, self.cap = 0, 0

    def call(self, envelope: bytes) -> bytes:
        store = self.store
        store.set_epoch_deadline(60_000)
        host.set_current(self.ctx)
        self.ctx.begin_call()
        try:
            if len(envelope) > self.cap:
                cap = max(4096, 1 << (len(envelope) - 1).bit_length())
                ptr = self.exports["hive_alloc"](store, cap) & 0xFFFFFFFF
                assert ptr and ptr % 8 == 0 and ptr + cap <= self.memory.data_len(store)
                if self.cap:
                    self.exports["hive_free"](store, self.ptr, self.cap)
                self.ptr, self.cap = ptr, cap
            self.memory.write(store, envelope, self.ptr)
            rptr, rlen = abi.split_packed(self.exports["hive_handle"](store, self.ptr, len(envelope)))
        finally:
            self.ctx.end_call()
        assert rptr + rlen <= self.memory.data_len(store)
        return bytes(self.memory.read(store, rptr, rptr + rlen))

    def run(self, envelopes: list[bytes]) -> list[bytes]:
        return [self.call(env) for env in envelopes]


def case(guest: RawGuest, name: str, body: bytes = b"") -> abi.Response:
    """One of an echo guest's special cases, named by the query of a CASE request."""
    return decode(guest.call(req(b"CASE", b"/case", name.encode(), None, body)))


def guest_log_lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    """What guests logged through hive.log, as (level, message without the "[function] " prefix)."""
    return [(r.levelno, r.getMessage().split("] ", 1)[1]) for r in caplog.records if r.name == "hive.guest"]


# ---- a built module's interface ----------------------------------------------------------------------


def exports_and_imports(path: Path) -> tuple[dict[str, tuple[list[str], list[str]]], set[tuple[str, str]]]:
    """A module's exported function signatures (it must export a memory too) and its imports."""
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(path))
    exports = {e.name: e.type for e in module.exports}
    assert isinstance(exports.pop("memory"), wasmtime.MemoryType)
    sigs = {
        name: ([str(p) for p in t.params], [str(r) for r in t.results])
        for name, t in exports.items()
        if isinstance(t, wasmtime.FuncType)
    }
    return sigs, {(i.module, i.name) for i in module.imports}


def check_imports_allowed(imports: set[tuple[str, str]], allowed_wasi: frozenset[str] = ALLOWED) -> None:
    for mod, name in imports:
        assert (mod == "wasi_snapshot_preview1" and name in allowed_wasi) or (mod, name) == ("hive", "log"), (mod, name)


def check_interface(path: Path, abi_exports: dict[str, tuple[list[str], list[str]]] = ABI_EXPORTS) -> dict[str, object]:
    """Exactly the ABI's exports (nothing else leaks out: no __stack_pointer, no runtime helpers such as __new
    or __pin) and only imports the host provides (no env.abort, env.seed or env.trace)."""
    sigs, imports = exports_and_imports(path)
    assert sigs == abi_exports, sigs
    check_imports_allowed(imports)
    return {"imports": imports, "size": path.stat().st_size}


# ---- the hello examples and the templates --------------------------------------------------------------


def copy_example(tmp_path_factory: pytest.TempPathFactory, name: str, *ignore: str) -> Path:
    """functions/<name> in a fresh folder, without built modules and whatever else `ignore` names."""
    folder = tmp_path_factory.mktemp("fn") / name
    shutil.copytree(ROOT / "functions" / name, folder, ignore=shutil.ignore_patterns("*.wasm", *ignore))
    return folder


def build_logged(folder: Path) -> tuple[Path, list[str]]:
    """build_function(folder), with the lines it printed."""
    lines: list[str] = []
    return build_function(folder, echo=lines.append), lines


def check_hello_edge_hive(resp: abi.Response) -> None:
    """Every hello example's answer to {"name": "Edge Hive"}: JSON, with the current time in UTC."""
    assert resp.status == 200 and resp.headers == [(b"content-type", b"application/json")]
    m = re.fullmatch(rb'\{"message":"Hello, Edge Hive!","timestamp":"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ)"\}', resp.body)
    assert m, resp.body
    stamp = datetime.strptime(m[1].decode(), "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    assert abs((stamp - datetime.now(UTC)).total_seconds()) < 300


Hello = Callable[[GuestInstance, bytes], abi.Response]  # POSTs a JSON body to a hello example


def hello_memory_sizes(inst: GuestInstance, hello: Hello) -> dict[int, int]:
    """The instance's memory size after 100 and after 2000 requests of assorted sizes."""
    bodies = [b'{"name":"' + b"x" * n + b'"}' for n in (0, 10, 100, 1000, 5000, 20000)]
    bodies += [b"not json", bytes(range(256)) * 8, b'{"name":"\\u00e9"}']
    sizes = {}
    for i in range(1, 2001):
        resp = hello(inst, bodies[i % len(bodies)])
        assert resp.status == 200
        if i in (100, 2000):
            sizes[i] = inst.memory.data_len(inst.store)
    return sizes


def copy_template(language: str, folder: Path) -> Path:
    """The `function new --lang <language>` template in folder, {{name}} replaced by the folder's name."""
    shutil.copytree(ROOT / "hive" / "templates" / language, folder)
    for f in folder.rglob("*"):
        if f.is_file():
            f.write_text(f.read_text(encoding="utf-8").replace("{{name}}", folder.name), encoding="utf-8")
    return folder
