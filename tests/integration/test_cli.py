"""The edge-hive CLI against a real server: build, deploy, invoke, list, delete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.conftest import BIN, ROOT, Server

pytestmark = pytest.mark.slow


def cli(server: Server, *args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HIVE_URL": server.url, "HIVE_ADMIN_TOKEN": server.token}
    return subprocess.run([str(BIN / "edge-hive"), *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=600, stdin=subprocess.DEVNULL)


def test_build_deploy_invoke_list_delete(server: Server, tmp_path) -> None:
    shutil.copytree(ROOT / "functions" / "hello", tmp_path / "hello", ignore=shutil.ignore_patterns("*.wasm"))
    r = cli(server, "function", "build", "hello", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "hello" / "hello.wasm").read_bytes()[:4] == b"\0asm"

    r = cli(server, "function", "deploy", "hello", "--name", "cli-hello", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "deployed cli-hello v1" in r.stdout

    r = cli(server, "function", "invoke", "cli-hello", "--data", '{"name": "CLI"}')
    assert r.returncode == 0 and "200" in r.stderr
    assert json.loads(r.stdout)["message"] == "Hello, CLI!"

    r = cli(server, "function", "list", "--json")
    assert any(f["function"] == "cli-hello" for f in json.loads(r.stdout))
    assert "cli-hello" in cli(server, "function", "list").stdout

    assert cli(server, "function", "delete", "cli-hello").returncode == 0
    r = cli(server, "function", "invoke", "cli-hello")
    assert r.returncode == 1 and "function_not_found" in r.stdout


def test_errors_are_clear_and_nonzero(server: Server, tmp_path) -> None:
    bad = tmp_path / "bad.wasm"
    bad.write_bytes(b"not wasm")
    r = cli(server, "function", "deploy", str(bad))
    assert r.returncode == 1 and "422 invalid_module" in r.stderr

    env = {**os.environ, "HIVE_URL": server.url, "HIVE_ADMIN_TOKEN": "wrong"}
    r = subprocess.run([str(BIN / "edge-hive"), "function", "list"], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "401" in r.stderr and "--token" in r.stderr

    env["HIVE_URL"] = "http://127.0.0.1:9"
    r = subprocess.run([str(BIN / "edge-hive"), "function", "list"], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "cannot reach the server" in r.stderr
