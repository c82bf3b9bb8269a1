"""The HTTP API in-process, with the lifespan running (real registry, real sandbox)."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from hive import abi
from hive.app import create_app
from hive.registry import Registry, check_integrity
from hive.settings import Settings
from tests.guests import ECHO_WAT, FORBIDDEN_WAT, LOOP_WAT, OOB_WAT, TRAP_WAT, const_wat, wat
from tests.support import ADMIN_TOKEN

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        yield c


def deploy(c: TestClient, name: str, wasm: bytes, manifest: dict | None = None, headers: dict | None = None):
    data = {"function": name}
    if manifest is not None:
        data["manifest"] = json.dumps(manifest)
    return c.post(
        "/api/v1/edge/deploy",
        headers=ADMIN if headers is None else headers,
        data=data,
        files={"wasm": ("f.wasm", wasm, "application/wasm")},
    )


def assert_error(r, status: int, code: str) -> dict:
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] == code and body["message"], body
    return body


def test_deploy_invoke_roundtrip(client: TestClient) -> None:
    r = deploy(client, "echo", wat(ECHO_WAT))
    assert r.status_code == 201, r.text
    rec = r.json()
    assert rec["function"] == "echo" and rec["version"] == 1 and len(rec["sha256"]) == 64

    r = client.put("/api/v1/edge/echo?a=1&a=2", content=b"\x00\xffbinary", headers={"x-multi": "1"})
    assert r.status_code == 200 and r.headers["x"] == "1"
    req = abi.decode_request(r.content)
    assert req.method == b"PUT"
    assert req.path == b"/api/v1/edge/echo"
    assert req.query == b"a=1&a=2"
    assert req.body == b"\x00\xffbinary"
    assert (b"x-multi", b"1") in req.headers


def test_supabase_style_path_reaches_the_guest(client: TestClient) -> None:
    deploy(client, "echo", wat(ECHO_WAT))
    r = client.delete("/functions/v1/echo/items/7")
    assert r.status_code == 200
    req = abi.decode_request(r.content)
    assert (req.method, req.path) == (b"DELETE", b"/functions/v1/echo/items/7")


def test_redeploy_serves_the_new_version_at_once(client: TestClient) -> None:
    deploy(client, "f", wat(const_wat("one")))
    assert client.post("/api/v1/edge/f").text == "one"
    r = deploy(client, "f", wat(const_wat("two")))
    assert r.json()["version"] == 2
    assert client.post("/api/v1/edge/f").text == "two"


def test_list_and_delete(client: TestClient) -> None:
    deploy(client, "a", wat(const_wat("a")))
    deploy(client, "b", wat(const_wat("b")), manifest={"config": {"SECRET": "hunter2"}})
    r = client.get("/api/v1/edge", headers=ADMIN)
    rows = r.json()["functions"]
    assert [f["function"] for f in rows] == ["a", "b"]
    assert {"version", "sha256", "size", "deployed_at"} <= set(rows[0])
    assert "hunter2" not in r.text and rows[1]["config_keys"] == ["SECRET"]

    assert client.delete("/api/v1/edge/a", headers=ADMIN).status_code == 200
    assert_error(client.post("/api/v1/edge/a"), 404, "function_not_found")
    assert_error(client.delete("/api/v1/edge/a", headers=ADMIN), 404, "function_not_found")
    assert client.post("/api/v1/edge/b").text == "b"


def test_admin_routes_need_the_token(client: TestClient) -> None:
    bad = {"authorization": "Bearer nope"}
    assert_error(deploy(client, "x", wat(ECHO_WAT), headers={}), 401, "unauthorized")
    assert_error(deploy(client, "x", wat(ECHO_WAT), headers=bad), 401, "unauthorized")
    assert_error(client.get("/api/v1/edge"), 401, "unauthorized")
    assert_error(client.get("/api/v1/edge", headers={"authorization": ADMIN_TOKEN}), 401, "unauthorized")
    assert_error(client.delete("/api/v1/edge/x", headers=bad), 401, "unauthorized")


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("../etc", 400, "invalid_name"),
        ("Upper", 400, "invalid_name"),
        ("a\x00b", 400, "invalid_name"),
        ("caf\u00e9", 400, "invalid_name"),
        ("deploy", 400, "invalid_name"),
        ("", 400, "invalid_name"),
    ],
)
def test_bad_names_are_refused(client: TestClient, settings: Settings, name: str, status: int, code: str) -> None:
    assert_error(deploy(client, name, wat(ECHO_WAT)), status, code)
    assert not any(p.name.startswith("..") for p in settings.data_path.rglob("*"))


def test_bad_uploads_change_nothing(client: TestClient, settings: Settings) -> None:
    deploy(client, "f", wat(const_wat("good")))
    good = wat(const_wat("x"))
    assert_error(deploy(client, "f", b"not wasm at all"), 422, "invalid_module")
    assert_error(deploy(client, "f", good[: len(good) // 2]), 422, "invalid_module")
    body = assert_error(deploy(client, "f", wat(FORBIDDEN_WAT)), 422, "forbidden_import")
    assert "env.system" in body["message"] and body["import_name"] == "env.system"
    assert_error(deploy(client, "f", wat("(module)")), 422, "invalid_module")
    assert_error(deploy(client, "f", good, manifest={"limits": {"timeout_ms": -1}}), 422, "invalid_manifest")
    r = client.post("/api/v1/edge/deploy", headers=ADMIN, data={"function": "f"}, files={"other": ("o", b"1")})
    assert_error(r, 400, "bad_request")
    r = client.post("/api/v1/edge/deploy", headers=ADMIN, files={"wasm": ("f.wasm", good)})
    assert_error(r, 400, "bad_request")
    r = client.post("/api/v1/edge/deploy", headers={**ADMIN, "content-type": "application/json"}, content=b"{}")
    assert_error(r, 415, "unsupported_media_type")
    # The start function runs at deploy under the time limit.
    start_loop = LOOP_WAT.replace(
        '(func (export "hive_abi_v1"))', '(func (export "hive_abi_v1")) (func $s (loop $l (br $l))) (start $s)'
    )
    assert_error(deploy(client, "f", wat(start_loop)), 422, "invalid_module")

    assert client.post("/api/v1/edge/f").text == "good"
    rows = client.get("/api/v1/edge", headers=ADMIN).json()["functions"]
    assert [(f["function"], f["version"]) for f in rows] == [("f", 1)]


def test_upload_over_the_limit_is_413(settings: Settings) -> None:
    small = settings.replace(max_upload_bytes=1024)
    with TestClient(create_app(small)) as c:
        big = wat(const_wat("x" * 2000))
        assert_error(deploy(c, "f", big), 413, "payload_too_large")


def test_request_body_over_the_limit_is_413(client: TestClient) -> None:
    deploy(client, "echo", wat(ECHO_WAT), manifest={"limits": {"max_request_bytes": 100}})
    assert_error(client.post("/api/v1/edge/echo", content=b"x" * 101), 413, "payload_too_large")
    assert client.post("/api/v1/edge/echo", content=b"x" * 100).status_code == 200


def test_guest_failures_map_to_gateway_errors(client: TestClient) -> None:
    deploy(client, "loop", wat(LOOP_WAT), manifest={"limits": {"timeout_ms": 20}})
    deploy(client, "trap", wat(TRAP_WAT))
    deploy(client, "oob", wat(OOB_WAT))
    deploy(client, "ok", wat(const_wat("fine")))
    assert_error(client.post("/api/v1/edge/loop"), 504, "timeout")
    assert assert_error(client.post("/api/v1/edge/trap"), 502, "trap")["trap"] == "unreachable"
    assert_error(client.post("/api/v1/edge/oob"), 502, "abi_violation")
    # The worker and the other functions are unaffected, and a failed guest serves again.
    assert client.post("/api/v1/edge/ok").text == "fine"
    assert_error(client.post("/api/v1/edge/trap"), 502, "trap")
    assert client.get("/healthz").status_code == 200


def test_unknown_routes_and_methods_are_json(client: TestClient) -> None:
    assert_error(client.get("/nope"), 404, "not_found")
    assert_error(client.delete("/healthz"), 405, "method_not_allowed")
    assert_error(client.post("/api/v1/edge/missing"), 404, "function_not_found")


def test_readyz_reports_warm_functions(client: TestClient) -> None:
    deploy(client, "a", wat(const_wat("a")))
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["warm"] == 1


def test_registry_intact_after_everything(settings: Settings) -> None:
    with TestClient(create_app(settings)) as client:
        deploy(client, "f", wat(const_wat("1")))
        deploy(client, "f", b"junk")
        deploy(client, "g", wat(const_wat("2")))
        client.delete("/api/v1/edge/g", headers=ADMIN)
    reg = Registry(settings.data_path / "registry.lmdb")
    try:
        assert check_integrity(reg) == []
        assert reg.current("f").version == 1 and reg.current("g") is None
    finally:
        reg.close()


def test_generated_admin_token_is_private(tmp_path) -> None:
    from hive.settings import load_settings

    s = load_settings(env={}, overrides={"data_dir": str(tmp_path / "d")})
    with TestClient(create_app(s)) as c:
        token_file = tmp_path / "d" / "admin.token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        assert len(token) >= 32
        assert c.get("/api/v1/edge", headers={"authorization": f"Bearer {token}"}).status_code == 200


def test_the_start_up_warm_up_leaves_no_trace(settings: Settings) -> None:
    # open_hive calls a built-in guest before serving: it must not show up as a function, in the
    # metrics, in the function log, or in the registry.
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        assert c.get("/api/v1/edge", headers=ADMIN).json()["functions"] == []
        assert "warm-up" not in c.get("/metrics", headers=ADMIN).text
        assert deploy(c, "hello", wat(const_wat("hi"))).status_code == 201
        assert c.post("/api/v1/edge/hello").text == "hi"
        assert [f["function"] for f in c.get("/api/v1/edge", headers=ADMIN).json()["functions"]] == ["hello"]
    lines = (settings.data_path / "logs" / "functions.jsonl").read_text().splitlines()
    assert [json.loads(line)["function"] for line in lines] == ["hello"]
    reg = Registry(settings.data_path / "registry.lmdb")
    try:
        assert list(reg.snapshot()[1]) == ["hello"]
    finally:
        reg.close()


def test_changes_answer_with_the_generation_every_worker_serves(client: TestClient) -> None:
    r = deploy(client, "gen", wat(const_wat("one")))
    assert r.status_code == 201, r.text
    first = r.json()
    assert first["workers_behind"] == 0 and first["generation"] >= 1
    r = deploy(client, "gen", wat(const_wat("two")))
    assert r.json()["generation"] > first["generation"]
    r = client.post("/api/v1/edge/gen/rollback", headers=ADMIN)
    assert r.status_code == 200 and r.json()["workers_behind"] == 0 and r.json()["version"] == 1
    r = client.delete("/api/v1/edge/gen", headers=ADMIN)
    assert r.status_code == 200 and r.json()["deleted"] == "gen" and r.json()["workers_behind"] == 0
