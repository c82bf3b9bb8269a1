"""A real `edge-hive serve` with 2 gunicorn workers on a free loopback port."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import httpx
import pytest

from tests.guests import ECHO_WAT, FORBIDDEN_WAT, LOOP_WAT, OOB_WAT, TRAP_WAT, const_wat, wat
from tests.support import Server

pytestmark = pytest.mark.slow


def fresh(server: Server, method: str, path: str, **kw: object) -> httpx.Response:
    """One request on a new connection, so the kernel may hand it to either worker."""
    with server.client(headers={"connection": "close"}) as c:
        return c.request(method, path, **kw)  # type: ignore[arg-type]


def healthy(server: Server) -> None:
    assert fresh(server, "GET", "/healthz").json()["status"] == "ok"


def test_master_runs_no_wasmtime_or_lmdb(server: Server) -> None:
    import psutil

    master = psutil.Process(server.proc.pid)
    maps = open(f"/proc/{master.pid}/maps").read()
    assert "wasmtime" not in maps and "lmdb" not in maps
    assert len(server.worker_pids()) == 2
    for pid in server.worker_pids():
        assert "wasmtime" in open(f"/proc/{pid}/maps").read()


def test_both_workers_serve(server: Server) -> None:
    pids = set()
    for _ in range(200):
        pids.add(fresh(server, "GET", "/healthz").json()["pid"])
        if len(pids) == 2:
            break
    assert pids == server.worker_pids()


def test_hello_end_to_end(server: Server, hello_wasm: bytes) -> None:
    # An explicit wasi list is exact: without the clock, the deploy is refused and names the import and
    # the grant; with no list at all, the harmless groups (the clock among them) are granted.
    r = server.deploy("hello", hello_wasm, manifest=json.dumps({"wasi": []}))
    assert r.status_code == 422 and "wasi_snapshot_preview1.clock_time_get" in r.json()["message"]
    assert r.json()["grant"] == "clocks"
    r = server.deploy("hello", hello_wasm)
    assert r.status_code == 201, r.text
    # Read-your-writes: every request after the deploy response, on any worker, sees hello.
    for _ in range(20):
        r = fresh(server, "POST", "/api/v1/edge/hello", json={"name": "Edge Hive"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["message"] == "Hello, Edge Hive!"
        assert r.headers["content-type"].startswith("application/json")
        ts = datetime.strptime(body["timestamp"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - ts).total_seconds()) < 600  # a real clock, not a constant
    assert fresh(server, "POST", "/api/v1/edge/hello", content=b"").json()["message"] == "Hello, World!"
    assert (
        fresh(server, "POST", "/api/v1/edge/hello", json={"name": 'a "quoted" \\ name'}).json()["message"]
        == 'Hello, a "quoted" \\ name!'
    )


def test_deploy_list_delete_cycle(server: Server) -> None:
    assert server.deploy("cycle", wat(const_wat("v1"))).json()["version"] == 1
    assert server.deploy("cycle", wat(const_wat("v2"))).json()["version"] == 2
    for _ in range(10):
        assert fresh(server, "POST", "/api/v1/edge/cycle").text == "v2"
    rows = fresh(server, "GET", "/api/v1/edge", headers=server.admin).json()["functions"]
    row = next(r for r in rows if r["function"] == "cycle")
    assert row["version"] == 2 and len(row["sha256"]) == 64 and row["size"] > 0 and row["deployed_at"]
    assert fresh(server, "DELETE", "/api/v1/edge/cycle", headers=server.admin).status_code == 200
    for _ in range(10):
        r = fresh(server, "POST", "/api/v1/edge/cycle")
        assert r.status_code == 404 and r.json()["error"] == "function_not_found"


def test_admin_needs_token(server: Server) -> None:
    r = fresh(server, "GET", "/api/v1/edge")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    with server.client() as c:
        r = c.post("/api/v1/edge/deploy", data={"function": "x"}, files={"wasm": ("x.wasm", wat(ECHO_WAT))})
    assert r.status_code == 401
    healthy(server)


def test_server_survives_every_bad_input(server: Server) -> None:
    server.deploy("steady", wat(const_wat("steady")))
    server.deploy("loop", wat(LOOP_WAT), manifest=json.dumps({"limits": {"timeout_ms": 50}}))
    server.deploy("trap", wat(TRAP_WAT))
    server.deploy("oob", wat(OOB_WAT))
    cases = [
        (lambda: server.deploy("bad", b"\x00asm\x01\x00\x00\x00garbage"), 422, "invalid_module"),
        (lambda: server.deploy("bad", b"hello world"), 422, "invalid_module"),
        (lambda: server.deploy("bad", wat(FORBIDDEN_WAT)), 422, "forbidden_import"),
        (lambda: server.deploy("../../etc", wat(ECHO_WAT)), 400, "invalid_name"),
        (lambda: server.deploy("deploy", wat(ECHO_WAT)), 400, "invalid_name"),
        (lambda: fresh(server, "POST", "/api/v1/edge/loop"), 504, "timeout"),
        (lambda: fresh(server, "POST", "/api/v1/edge/trap"), 502, "trap"),
        (lambda: fresh(server, "POST", "/api/v1/edge/oob"), 502, "abi_violation"),
        (
            lambda: fresh(server, "POST", "/api/v1/edge/steady", content=b"x" * (6 * 1024 * 1024 + 1)),
            413,
            "payload_too_large",
        ),
        (lambda: fresh(server, "POST", "/api/v1/edge/nothing"), 404, "function_not_found"),
    ]
    for send, status, code in cases:
        r = send()
        assert r.status_code == status, (code, r.text)
        assert r.json()["error"] == code and r.json()["message"]
        healthy(server)
        assert fresh(server, "POST", "/api/v1/edge/steady").text == "steady"
    # No worker died along the way.
    assert "Worker exiting" not in server.log() and "was sent SIGKILL" not in server.log()
    assert not re.search(
        r"Booting worker with pid: \d+\n(.|\n)*Booting worker with pid: \d+\n(.|\n)*Booting worker", server.log()
    )


PRINTER_WAT = r"""
(module
  (import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (func (export "hive_abi_v1"))
  (func (export "hive_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "hive_handle") (param i32 i32) (result i64)
    (i32.store (i32.const 16) (i32.const 64))   ;; iov.buf
    (i32.store (i32.const 20) (i32.const 16))   ;; iov.len
    (drop (call $fd_write (i32.const 1) (i32.const 16) (i32.const 1) (i32.const 24)))
    (i64.or (i64.shl (i64.const 128) (i64.const 32)) (i64.const 12)))
  (data (i32.const 64) "marker-7f3a9c21\n")
  (data (i32.const 128) "\c8\00\00\00\00\00\00\00\00\00\00\00"))
"""


def test_guest_stdout_reaches_the_server_log_tagged(server: Server) -> None:
    assert server.deploy("printer", wat(PRINTER_WAT), manifest=json.dumps({"wasi": ["stdio"]})).status_code == 201
    assert fresh(server, "POST", "/api/v1/edge/printer").status_code == 200
    assert re.search(r"\[printer v1 stdout [0-9a-f]+\] marker-7f3a9c21", server.log()), server.log()[-2000:]


def test_no_compile_or_instantiate_on_the_request_path(server: Server) -> None:
    server.deploy("warm", wat(const_wat("warm")))

    def counters() -> dict[int, tuple[int, int]]:
        seen: dict[int, tuple[int, int]] = {}
        for _ in range(200):
            r = fresh(server, "GET", "/readyz").json()
            seen[r["pid"]] = (r["loads"], r["instantiations"])
            if len(seen) == 2:
                break
        return seen

    before = counters()
    for _ in range(100):
        assert fresh(server, "POST", "/api/v1/edge/warm").text == "warm"
    assert counters() == before
