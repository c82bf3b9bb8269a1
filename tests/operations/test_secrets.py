"""Server-wide secrets (`edge-hive secrets`, like `supabase secrets set`): every function sees them in its
environment, its own config wins, a change is live on every worker without a redeploy, and values are
never listed or logged."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guests import WASI, wat
from tests.security.common import fresh
from tests.support import BIN, Server, start_server

pytestmark = pytest.mark.slow

# Answers its whole environment (NUL-separated KEY=VALUE strings) as the body.
ENV_WAT = f"""(module
  (import "{WASI}" "environ_sizes_get" (func $sizes (param i32 i32) (result i32)))
  (import "{WASI}" "environ_get" (func $get (param i32 i32) (result i32)))
  (memory (export "memory") 2)
  (func (export "hive_abi_v1"))
  (func (export "hive_alloc") (param i32) (result i32) (i32.const 4096))
  (func (export "hive_handle") (param i32 i32) (result i64)
    (drop (call $sizes (i32.const 100) (i32.const 104)))
    (drop (call $get (i32.const 1024) (i32.const 16396)))
    (i32.store (i32.const 16384) (i32.const 200))
    (i32.store (i32.const 16388) (i32.const 0))
    (i32.store (i32.const 16392) (i32.load (i32.const 104)))
    (i64.or (i64.shl (i64.const 16384) (i64.const 32))
            (i64.extend_i32_u (i32.add (i32.const 12) (i32.load (i32.const 104)))))))
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("secrets") / "data", workers=2)
    r = s.deploy("env", wat(ENV_WAT), json.dumps({"config": {"OWN": "mine", "SHARED": "function-wins"}}))
    assert r.status_code == 201, r.text
    yield s
    s.stop()


def env_of(server: Server) -> dict[str, str]:
    body = fresh(server, "POST", "/api/v1/edge/env").content
    return dict(item.decode().split("=", 1) for item in body.split(b"\0") if item)


def cli(server: Server, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HIVE_URL": server.url, "HIVE_ADMIN_TOKEN": server.token}
    return subprocess.run(
        [str(BIN / "edge-hive"), "secrets", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


def test_secrets_reach_every_function_and_worker_without_a_redeploy(server: Server, tmp_path: Path) -> None:
    assert env_of(server) == {"OWN": "mine", "SHARED": "function-wins"}
    r = cli(server, "set", "STRIPE_KEY=sk_test_s3cret-value", "SHARED=server-value", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "s3cret" not in r.stdout
    for _ in range(12):  # fresh connections: both workers answer, each already has the change
        assert env_of(server) == {"OWN": "mine", "SHARED": "function-wins", "STRIPE_KEY": "sk_test_s3cret-value"}
    r = cli(server, "list", "--json", cwd=tmp_path)
    assert json.loads(r.stdout) == ["SHARED", "STRIPE_KEY"] and "s3cret" not in r.stdout
    listing = fresh(server, "GET", "/api/v1/edge", headers=server.admin).json()["functions"][0]
    assert listing["version"] == 1 and "s3cret" not in json.dumps(listing)  # no redeploy; never shown
    r = cli(server, "unset", "STRIPE_KEY", cwd=tmp_path)
    assert r.returncode == 0 and "unset STRIPE_KEY" in r.stdout
    for _ in range(12):
        assert "STRIPE_KEY" not in env_of(server)
    assert "s3cret" not in server.log()


def test_bad_secrets_are_refused_clearly(server: Server) -> None:
    r = fresh(server, "PUT", "/api/v1/secrets", headers=server.admin, json={"1BAD": "x"})
    assert r.status_code == 400 and r.json()["error"] == "bad_request"
    assert fresh(server, "GET", "/api/v1/secrets").status_code == 401
