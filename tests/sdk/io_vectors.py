"""What the test_io_<lang>.py files share: the SDKs' fetch and KV calls checked against the ABI vectors
(`fetch_requests`, `kv_ops`, `results` in hive/sdk/abi_vectors.json) in real wasmtime, against a host that
can lie, and end to end on a real server.

Every language has an I/O test guest (tests/sdk/guests/io/<lang>) that speaks one protocol:

  FETCH, SEND, ANY  one fetch made from the request: query = method, path = url, the request's headers,
                    its body; FETCH through the blocking call, SEND through send + wait(handle), ANY
                    through send + wait(0) (the first pending one)
  KV                one KV operation: query = op (get, set, delete, list, incr), path = store, headers
                    k (the key or prefix), ttl, cursor, limit, delta; the body is a set's value
  GET .../proxy     fetches the x-url header's URL: the upstream's status and body, or 200
                    {"error": code} when the fetch fails
  GET .../count     incr default/visits by 1, then get it: {"count": n, "stored": "<the stored value>"}

Each vector-mode answer is a 200 describing the SDK's result: x-error (the code; the body is the message),
or for a fetch x-status then the upstream's headers and its body, for get x-found and the value as the
body, x-deleted, x-key per listed key then x-cursor unless it was the last page, x-value for incr.

`IoHost` is a real wasmtime instance whose four I/O imports are implemented here, per docs/abi.md: it
keeps every record the guest sends (so an encoding is checked byte for byte) and answers with the
record it is given, or lies about it.
"""

from __future__ import annotations

import json
import random
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import wasmtime

from hive import abi
from tests.sdk.common import mutate, req
from tests.support import start_server

VECTORS = json.loads((Path(__file__).resolve().parents[2] / "hive" / "sdk" / "abi_vectors.json").read_text("utf-8"))
IO_IMPORTS = {("hive", n) for n in ("fetch_send", "fetch_wait", "kv", "result_read")}
MEMORY_LIMIT = 128 << 20  # the host's default guest memory
U32 = struct.Struct("<I")


def fetch_ok() -> bytes:
    return next(bytes.fromhex(v["record_hex"]) for v in VECTORS["results"] if v["name"] == "fetch_ok")


@dataclass
class Lie:
    """How IoHost misleads the guest about one result (None: tell the truth)."""

    announce: int | None = None  # the result length fetch_wait / kv announce
    copied: int | None = None  # what result_read says it copied
    handle: int | None = None  # the handle fetch_wait / kv name
    refuse: bool = False  # fetch_send / kv return -1 (64 unread results)
    lose: bool = False  # fetch_wait and result_read return -1 (no such handle)


class IoHost:
    """One instance of a guest, with WASI, hive.log and the four I/O host calls defined here."""

    def __init__(self, wasm: bytes) -> None:
        engine = wasmtime.Engine()
        module = wasmtime.Module(engine, wasm)
        linker = wasmtime.Linker(engine)
        linker.define_wasi()
        i32, i64 = wasmtime.ValType.i32(), wasmtime.ValType.i64()
        ft = wasmtime.FuncType
        linker.define_func("hive", "log", ft([i32, i32, i32], []), self._log, access_caller=True)
        linker.define_func("hive", "fetch_send", ft([i32, i32], [i32]), self._fetch_send, access_caller=True)
        linker.define_func("hive", "fetch_wait", ft([i32], [i64]), self._fetch_wait)
        linker.define_func("hive", "kv", ft([i32, i32], [i64]), self._kv, access_caller=True)
        linker.define_func("hive", "result_read", ft([i32, i32, i32], [i32]), self._result_read, access_caller=True)
        self.store = wasmtime.Store(engine)
        self.store.set_wasi(wasmtime.WasiConfig())
        self.store.set_limits(memory_size=MEMORY_LIMIT)
        self.exports = linker.instantiate(self.store, module).exports(self.store)
        self.memory = self.exports["memory"]
        if "_initialize" in self.exports:
            self.exports["_initialize"](self.store)
        self.records: list[bytes] = []  # every fetch request and KV operation record, in order
        self.logs: list[str] = []
        self.answer = b""  # the result record the next call gets
        self.lie = Lie()
        self.slots: dict[int, bytes] = {}
        self.next_handle = 1
        self.buf, self.cap = 0, 0

    # -- the host calls --

    def _log(self, caller: wasmtime.Caller, level: int, ptr: int, n: int) -> None:
        self.logs.append(self._read(caller, ptr, n).decode("utf-8", "replace"))

    def _read(self, caller: wasmtime.Caller, ptr: int, n: int) -> bytes:
        mem = caller["memory"]
        assert isinstance(mem, wasmtime.Memory)
        assert 0 <= ptr and ptr + n <= mem.data_len(caller), "a record outside guest memory"
        return bytes(mem.read(caller, ptr, ptr + n))

    def _start(self, caller: wasmtime.Caller, ptr: int, n: int) -> int | None:
        self.records.append(self._read(caller, ptr, n))
        if self.lie.refuse:
            return None
        h = self.next_handle
        self.next_handle += 1
        self.slots[h] = self.answer
        return h

    def _packed(self, h: int) -> int:
        n = len(self.slots[h]) if self.lie.announce is None else self.lie.announce
        h = h if self.lie.handle is None else self.lie.handle
        return struct.unpack("<q", struct.pack("<Q", (h << 32) | n))[0]

    def _fetch_send(self, caller: wasmtime.Caller, ptr: int, n: int) -> int:
        h = self._start(caller, ptr, n)
        return -1 if h is None else h

    def _fetch_wait(self, handle: int) -> int:
        if handle == 0 and self.slots:
            handle = min(self.slots)
        return self._packed(handle) if handle in self.slots and not self.lie.lose else -1

    def _kv(self, caller: wasmtime.Caller, ptr: int, n: int) -> int:
        h = self._start(caller, ptr, n)
        return -1 if h is None else self._packed(h)

    def _result_read(self, caller: wasmtime.Caller, handle: int, ptr: int, n: int) -> int:
        if self.lie.lose or handle not in self.slots:
            return -1
        data = self.slots.pop(handle)[: max(n, 0)]
        mem = caller["memory"]
        assert isinstance(mem, wasmtime.Memory)
        assert 0 <= ptr and ptr + len(data) <= mem.data_len(caller), "result_read outside guest memory"
        mem.write(caller, data, ptr)
        return len(data) if self.lie.copied is None else self.lie.copied

    # -- calling the guest --

    def call(self, envelope: bytes, answer: bytes = b"", lie: Lie | None = None) -> abi.Response:
        """One request; every I/O call it makes is answered with `answer`, as `lie` says."""
        self.answer, self.lie = answer, lie or Lie()
        store = self.store
        if len(envelope) > self.cap:
            if self.cap:
                self.exports["hive_free"](store, self.buf, self.cap)
            self.cap = max(len(envelope), 4096)
            self.buf = self.exports["hive_alloc"](store, self.cap) & 0xFFFFFFFF
            assert self.buf and self.buf % 8 == 0
        self.memory.write(store, envelope, self.buf)
        ptr, n = abi.split_packed(self.exports["hive_handle"](store, self.buf, len(envelope)))
        assert ptr + n <= self.memory.data_len(store)
        self.slots.clear()  # as the host does when hive_handle returns
        return parse(bytes(self.memory.read(store, ptr, ptr + n)))


def parse(raw: bytes) -> abi.Response:
    """A response envelope, structure checked but not the host's header rules: a guest may pass on a header
    a lying host made up, which the real host would then refuse."""
    pos = 0

    def take(n: int) -> bytes:
        nonlocal pos
        assert pos + n <= len(raw), "a truncated response envelope"
        pos += n
        return raw[pos - n : pos]

    def field() -> bytes:
        return take(U32.unpack(take(4))[0])

    status, count = struct.unpack("<II", take(8))
    headers = [(field().lower(), field()) for _ in range(count)]
    body = field()
    assert pos == len(raw), "trailing bytes after the response envelope"
    return abi.Response(status, headers, body)


# ---- requests in the guests' protocol -------------------------------------------------------------------


def fetch_request(v: dict[str, object], how: bytes = b"FETCH") -> bytes:
    headers = [(n.encode(), val.encode()) for n, val in v["headers"]]  # type: ignore[attr-defined]
    return req(how, str(v["url"]).encode(), str(v["method"]).encode(), headers, bytes.fromhex(str(v["body_hex"])))


def kv_request(op: str, store: str, key: bytes, **args: object) -> bytes:
    headers = [(b"k", key)]
    for name in ("ttl", "cursor", "limit", "delta"):
        if name in args:
            value = args[name]
            headers.append((name.encode(), value if isinstance(value, bytes) else str(value).encode()))
    return req(b"KV", store.encode(), op.encode(), headers, args.get("value", b""))  # type: ignore[arg-type]


def kv_vector_request(v: dict[str, object]) -> bytes:
    args: dict[str, object] = {}
    for name in ("ttl_ms", "limit", "delta"):
        if name in v:
            args["ttl" if name == "ttl_ms" else name] = v[name]
    if "cursor_hex" in v:
        args["cursor"] = bytes.fromhex(str(v["cursor_hex"]))
    if "value_hex" in v:
        args["value"] = bytes.fromhex(str(v["value_hex"]))
    return kv_request(str(v["op"]), str(v["store"]), bytes.fromhex(str(v["key_hex"])), **args)


def headers_of(resp: abi.Response, name: bytes) -> list[bytes]:
    return [v for n, v in resp.headers if n == name]


def error_of(resp: abi.Response) -> tuple[str, str] | None:
    codes = headers_of(resp, b"x-error")
    return (codes[0].decode(), resp.body.decode("utf-8", "replace")) if codes else None


# ---- the checks ------------------------------------------------------------------------------------------


def check_fetch_requests(host: IoHost) -> None:
    """Each fetch_requests vector, made from its fields by every way to fetch, is sent byte for byte."""
    for v in VECTORS["fetch_requests"]:
        for how in (b"FETCH", b"SEND", b"ANY"):
            host.records.clear()
            resp = host.call(fetch_request(v, how), fetch_ok())
            assert host.records == [bytes.fromhex(v["record_hex"])], (v["name"], how)
            assert resp.status == 200 and error_of(resp) is None, (v["name"], how, resp)
            assert headers_of(resp, b"x-status") == [b"200"], (v["name"], how)


def check_kv_ops(host: IoHost) -> None:
    """Each kv_ops vector, made from its fields, is sent byte for byte."""
    ok = {"get": "kv_get_found", "set": "kv_set", "delete": "kv_delete", "list": "kv_list", "incr": "kv_incr"}
    results = {v["name"]: bytes.fromhex(v["record_hex"]) for v in VECTORS["results"]}
    for v in VECTORS["kv_ops"]:
        host.records.clear()
        resp = host.call(kv_vector_request(v), results[ok[v["op"]]])
        assert host.records == [bytes.fromhex(v["record_hex"])], v["name"]
        assert resp.status == 200 and error_of(resp) is None, (v["name"], resp)


# Which call each results vector answers, and the request that makes the call.
_RESULT_CALLS = {
    "fetch": fetch_request(VECTORS["fetch_requests"][0]),
    "kv_get": kv_request("get", "default", b"visits"),
    "kv_set": kv_request("set", "default", b"visits", value=b"1"),
    "kv_delete": kv_request("delete", "default", b"visits"),
    "kv_list": kv_request("list", "default", b"user:"),
    "kv_incr": kv_request("incr", "default", b"visits", delta=-3),
    "kv_quota": kv_request("set", "default", b"big", value=b"x" * 100),
}


def result_call(name: str) -> bytes:
    return next(r for prefix, r in _RESULT_CALLS.items() if name.startswith(prefix))


def check_results(host: IoHost) -> None:
    """Each results vector, as the answer to its call, is decoded into exactly its fields."""
    for v in VECTORS["results"]:
        resp = host.call(result_call(v["name"]), bytes.fromhex(v["record_hex"]))
        assert resp.status == 200, (v["name"], resp)
        if "error" in v:
            assert error_of(resp) == (v["error"], v["message"]), v["name"]
            continue
        assert error_of(resp) is None, (v["name"], resp)
        if "status" in v:
            assert headers_of(resp, b"x-status") == [str(v["status"]).encode()], v["name"]
            assert [(n.decode(), val.decode()) for n, val in resp.headers[1:]] == [tuple(h) for h in v["headers"]]
            assert resp.body == bytes.fromhex(v["body_hex"]), v["name"]
        elif "found" in v:
            assert headers_of(resp, b"x-found") == [b"1" if v["found"] else b"0"], v["name"]
            assert resp.body == bytes.fromhex(v["value_hex"]), v["name"]
        elif "deleted" in v:
            assert headers_of(resp, b"x-deleted") == [b"1" if v["deleted"] else b"0"], v["name"]
        elif "keys_hex" in v:
            assert headers_of(resp, b"x-key") == [bytes.fromhex(k) for k in v["keys_hex"]], v["name"]
            cursor = bytes.fromhex(v["cursor_hex"])
            assert headers_of(resp, b"x-cursor") == ([cursor] if cursor else []), v["name"]
        elif "value" in v:
            assert headers_of(resp, b"x-value") == [str(v["value"]).encode()], v["name"]
        else:  # kv_set: nothing to report
            assert v["name"] == "kv_set" and resp.headers == [] and resp.body == b"", (v["name"], resp)


def check_guest_errors(host: IoHost) -> None:
    """What the SDK refuses itself, without calling the host: a fetch with more than 256 headers."""
    host.records.clear()
    many = [(b"x-h", b"v")] * 257
    resp = host.call(req(b"FETCH", b"https://api.example.com/", b"GET", many), fetch_ok())
    assert error_of(resp) is not None and error_of(resp)[0] == "invalid_argument"  # type: ignore[index]
    assert host.records == []
    resp = host.call(req(b"FETCH", b"https://api.example.com/", b"GET", many[:256]), fetch_ok())
    assert error_of(resp) is None and len(host.records) == 1


def _code(resp: abi.Response) -> str | None:
    err = error_of(resp)
    return err[0] if err else None


def check_lying_host(host: IoHost, huge_ok: bool = True) -> None:
    """A host that lies about handles, lengths and records gets an error value, never a read out of bounds
    or a trap; the instance keeps answering. `huge_ok`: the guest turns a result bigger than the memory
    it may have into out_of_memory (AssemblyScript aborts on a failed allocation below 1 GiB)."""
    for name, call in _RESULT_CALLS.items():
        record = bytes.fromhex(next(v["record_hex"] for v in VECTORS["results"] if v["name"].startswith(name)))
        assert _code(host.call(call, record, Lie(refuse=True))) == "too_many_pending", name
        assert _code(host.call(call, record, Lie(lose=True))) == "unknown_handle", name
        assert _code(host.call(call, record, Lie(announce=len(record) + 1))) == "invalid_result", name
        assert _code(host.call(call, record, Lie(copied=len(record) + 8))) == "invalid_result", name
        assert _code(host.call(call, record, Lie(copied=len(record) - 1))) == "invalid_result", name
        assert _code(host.call(call, record, Lie(handle=0))) == "invalid_result", name
        assert _code(host.call(call, record, Lie(announce=0xFFFF_FFF0))) in ("out_of_memory", "invalid_result"), name
        if huge_ok:
            assert _code(host.call(call, record, Lie(announce=MEMORY_LIMIT + (64 << 20)))) == "out_of_memory", name
        for cut in range(len(record)):  # every truncation: no record has a valid proper prefix
            assert _code(host.call(call, record[:cut])) == "invalid_result", (name, cut)
        for kind in (2, 0xFFFFFFFF):
            assert _code(host.call(call, U32.pack(kind) + record[4:])) == "invalid_result", (name, kind)
        assert _code(host.call(call, record + b"\0")) == "invalid_result", name  # trailing bytes
    rng = random.Random(4242)
    records = [(result_call(v["name"]), bytes.fromhex(v["record_hex"])) for v in VECTORS["results"]]
    for _ in range(400):  # lying lengths and counts inside the record
        call, record = rng.choice(records)
        resp = host.call(call, mutate(rng, record) if len(record) > 4 else record)
        assert resp.status == 200
    # Still a working instance.
    resp = host.call(result_call("fetch"), fetch_ok())
    assert _code(resp) is None and resp.body == b'{"ok":true}'


def check_imports(path: Path, expected: set[tuple[str, str]]) -> None:
    module = wasmtime.Module.from_file(wasmtime.Engine(), str(path))
    imports = {(i.module, i.name) for i in module.imports}
    assert imports == expected, imports


# ---- end to end ------------------------------------------------------------------------------------------


@contextmanager
def upstream() -> Iterator[str]:
    """A loopback HTTP server: GET /hello answers 200 "hello from upstream", anything else 404."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            body = b"hello from upstream" if self.path == "/hello" else b"no such page"
            self.send_response(200 if self.path == "/hello" else 404)
            self.send_header("content-type", "text/plain")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def check_on_server(wasm: bytes, tmp_path: Path, wasi: list[str]) -> None:
    """The I/O guest deployed on a real server: it fetches from a granted loopback upstream, is refused
    a host it was not granted (an error value, not a trap), and counts visits in KV."""
    with upstream() as up:
        server = start_server(tmp_path / "data", workers=1)
        try:
            manifest = {"wasi": wasi, "allowed_hosts": [up], "kv": ["default"]}
            r = server.deploy("io", wasm, json.dumps(manifest))
            assert r.status_code in (200, 201), r.text
            with server.client() as c:
                r = c.get("/functions/v1/io/proxy", headers={"x-url": f"{up}/hello"})
                assert (r.status_code, r.text) == (200, "hello from upstream"), r.text
                r = c.get("/functions/v1/io/proxy", headers={"x-url": f"{up}/missing"})
                assert (r.status_code, r.text) == (404, "no such page")
                r = c.get("/functions/v1/io/proxy", headers={"x-url": "http://127.0.0.2:9/"})
                assert r.status_code == 200 and r.json() == {"error": "host_not_allowed"}, r.text
                for n in (1, 2, 3):
                    r = c.get("/functions/v1/io/count")
                    assert r.status_code == 200 and r.json() == {"count": n, "stored": str(n)}, r.text
        finally:
            server.stop()
