"""KV stores through the whole stack: WAT guests on a real server of two workers, grants, limits, TTL,
durability across deploys and restarts, and the admin API and CLI."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.io.guests import Result, io_guest, kv, program, results
from tests.security.common import fresh
from tests.support import BIN, Server, poll, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("kv") / "data", workers=2)
    for name, manifest in {
        "counter": {"kv": ["default"]},
        "reader": {"kv": ["default"]},
        "other": {"kv": ["other"]},
        "nokv": {},
    }.items():
        assert s.deploy(name, io_guest(), json.dumps(manifest)).status_code == 201
    assert s.deploy("big", io_guest(pages=96), json.dumps({"kv": ["default"]})).status_code == 201
    yield s
    s.stop()


def run(server: Server, name: str, *steps: tuple) -> list[Result | int]:
    r = fresh(server, "POST", f"/api/v1/edge/{name}", content=program(*steps))
    assert r.status_code == 200, r.text
    return results(r.content)


def one(server: Server, name: str, rec: bytes) -> Result:
    (res,) = run(server, name, ("kv", rec))
    assert isinstance(res, Result)
    return res


def test_set_get_delete(server: Server) -> None:
    assert one(server, "counter", kv("set", "default", b"greeting", b"hello")).kind == 0
    assert one(server, "reader", kv("get", "default", b"greeting")).kv_get() == b"hello"  # shared by grant
    assert one(server, "counter", kv("delete", "default", b"greeting")).raw == b"\x01\x00\x00\x00"
    assert one(server, "counter", kv("get", "default", b"greeting")).kv_get() is None


def test_increments_are_atomic_across_workers(server: Server) -> None:
    def hammer() -> None:
        for _ in range(25):
            one(server, "counter", kv("incr", "default", b"visits", delta=1))

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert one(server, "reader", kv("incr", "default", b"visits", delta=0)).kv_number() == 200


def test_no_grant_no_store(server: Server) -> None:
    for name, store in (("nokv", "default"), ("other", "default"), ("counter", "other")):
        res = one(server, name, kv("get", store, b"k"))
        assert res.code == "store_not_granted" and '"kv"' in res.message, (name, res.message)


def test_list_pages_by_prefix(server: Server) -> None:
    for i in range(25):
        one(server, "counter", kv("set", "default", b"user:%02d" % i, b"x"))
    one(server, "counter", kv("set", "default", b"zzz", b"x"))
    seen: list[bytes] = []
    cursor = b""
    for _ in range(10):
        keys, cursor = one(server, "counter", kv("list", "default", b"user:", cursor=cursor, limit=10)).kv_keys()
        seen += keys
        if not cursor:
            break
    assert seen == [b"user:%02d" % i for i in range(25)]


def test_keys_expire(server: Server) -> None:
    one(server, "counter", kv("set", "default", b"short", b"lived", ttl_ms=300))
    assert one(server, "counter", kv("get", "default", b"short")).kv_get() == b"lived"
    poll(
        "the key to expire",
        lambda: one(server, "reader", kv("get", "default", b"short")).kv_get() is None,
        timeout=20,
        interval=0.1,
    )


def test_limits_are_error_values(server: Server) -> None:
    assert one(server, "counter", kv("get", "default", b"k" * 513)).code == "key_too_large"
    assert one(server, "big", kv("set", "default", b"huge", b"v" * ((1 << 20) + 1))).code == "value_too_large"
    assert one(server, "big", kv("set", "default", b"max", b"v" * (1 << 20))).kind == 0
    one(server, "counter", kv("set", "default", b"word", b"not a number"))
    assert one(server, "counter", kv("incr", "default", b"word")).code == "not_a_number"
    assert one(server, "counter", kv("get", "Bad Store", b"k")).code == "store_not_granted"


def test_the_admin_api_and_cli(server: Server, tmp_path: Path) -> None:
    env = {**os.environ, "HIVE_URL": server.url, "HIVE_ADMIN_TOKEN": server.token}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "edge-hive"), "kv", *args],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            stdin=subprocess.DEVNULL,
            cwd=tmp_path,
        )

    r = cli("set", "default", "config/theme", "dark", "--json")
    assert r.returncode == 0, r.stderr
    assert one(server, "reader", kv("get", "default", b"config/theme")).kv_get() == b"dark"  # guests see it
    r = cli("get", "default", "config/theme", "--json")
    assert json.loads(r.stdout) == {"store": "default", "key": "config/theme", "value": "dark"}
    r = cli("list", "default", "--prefix", "config/", "--json")
    assert json.loads(r.stdout)["keys"] == ["config/theme"]
    r = cli("list", "--json")
    assert any(s["name"] == "default" and s["keys"] > 0 for s in json.loads(r.stdout)["stores"])
    assert json.loads(cli("delete", "default", "config/theme", "--json").stdout)["deleted"] is True
    r = cli("get", "default", "config/theme")
    assert r.returncode == 1 and "key_not_found" in r.stderr
    assert fresh(server, "GET", "/api/v1/kv").status_code == 401  # admin only


def test_data_outlives_deploys_rollbacks_and_restarts(tmp_path: Path) -> None:
    data = tmp_path / "data"
    s = start_server(data, workers=1)
    try:
        assert s.deploy("f", io_guest(), json.dumps({"kv": ["default"]})).status_code == 201
        one(s, "f", kv("set", "default", b"kept", b"v1"))
        assert s.deploy("f", io_guest(pages=64), json.dumps({"kv": ["default"]})).status_code == 201
        assert fresh(s, "POST", "/api/v1/edge/f/rollback", headers=s.admin).status_code == 200
        assert one(s, "f", kv("get", "default", b"kept")).kv_get() == b"v1"
    finally:
        s.stop()
    s = start_server(data, workers=1)
    try:
        assert one(s, "f", kv("get", "default", b"kept")).kv_get() == b"v1"
    finally:
        s.stop()


def test_a_store_over_its_quota_refuses_writes(tmp_path: Path) -> None:
    s = start_server(tmp_path / "data", workers=1, env={"HIVE_KV_QUOTA_MB": "1"})
    try:
        assert s.deploy("f", io_guest(pages=64), json.dumps({"kv": ["default"]})).status_code == 201
        assert one(s, "f", kv("set", "default", b"a", b"x" * 600_000)).kind == 0
        res = one(s, "f", kv("set", "default", b"b", b"x" * 600_000))
        assert res.code == "quota_exceeded" and "quota" in res.message
        assert one(s, "f", kv("delete", "default", b"a")).kind == 0  # deletes still work, then writes again
        assert one(s, "f", kv("set", "default", b"b", b"x" * 600_000)).kind == 0
    finally:
        s.stop()
