"""The edge-hive CLI against a real server: build, deploy, invoke, list, delete."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from tests.support import BIN, ROOT, Server

pytestmark = pytest.mark.slow


def cli(server: Server, *args: str, cwd=None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HIVE_URL": server.url, "HIVE_ADMIN_TOKEN": server.token}
    return subprocess.run(
        [str(BIN / "edge-hive"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


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


def test_new_scaffold_deploys_with_config_and_shows_logs(server: Server, tmp_path) -> None:
    r = cli(server, "function", "new", "scaffolded", "--lang", "c", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "scaffolded" / "hive.toml").read_text().count('name = "scaffolded"') == 1
    assert cli(server, "function", "new", "scaffolded", cwd=tmp_path).returncode == 1  # never overwrites
    assert cli(server, "function", "new", "Bad/Name", cwd=tmp_path).returncode == 1

    env_file = tmp_path / "secrets.env"
    env_file.write_text("# comment\nAPI_SECRET='from-file'\n")
    r = cli(
        server,
        "function",
        "deploy",
        "scaffolded",
        "--config",
        "TOKEN=s3cr3t-value",
        "--config-file",
        str(env_file),
        cwd=tmp_path,
    )
    assert r.returncode == 0, r.stderr
    r = cli(server, "function", "invoke", "scaffolded", "--data", '{"name": "logs"}')
    assert r.returncode == 0 and json.loads(r.stdout)["message"] == "Hello, logs!"

    listing = cli(server, "function", "list", "--json").stdout
    row = next(f for f in json.loads(listing) if f["function"] == "scaffolded")
    assert row["config_keys"] == ["API_SECRET", "TOKEN"] and row["invocations"] >= 1
    assert "s3cr3t-value" not in listing and "from-file" not in listing

    out = cli(server, "function", "logs", "scaffolded", "--json").stdout.splitlines()
    records = [json.loads(line) for line in out]
    assert any(r["kind"] == "invocation" and r["status"] == 200 for r in records)
    assert any(r["kind"] == "output" and "scaffolded called with POST" in r["text"] for r in records)
    assert "s3cr3t-value" not in server.log()


@pytest.mark.parametrize("lang", ["c", "rust", "zig", "assemblyscript"])
def test_every_template_goes_from_new_to_invoke(server: Server, tmp_path, lang: str) -> None:
    name = f"tpl-{lang[:4]}"
    assert cli(server, "function", "new", name, "--lang", lang, cwd=tmp_path).returncode == 0
    r = cli(server, "function", "deploy", name, cwd=tmp_path)  # builds with the language's toolchain
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli(server, "function", "invoke", name, "--data", '{"name": "template"}')
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["message"] == "Hello, template!"
