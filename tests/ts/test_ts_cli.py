"""The developer's path for TypeScript and JavaScript: `function new --lang ts|js` scaffolds a Supabase-style
function that builds, deploys, answers, and logs through the CLI, like the other languages."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.support import BIN, Server, poll

pytestmark = pytest.mark.slow


def cli(server: Server | None, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    head = [str(BIN / "edge-hive")]
    if server is not None:
        head += ["function", "--url", server.url, "--token", server.token]
    return subprocess.run(
        [*head, *args], capture_output=True, text=True, timeout=600, cwd=cwd, stdin=subprocess.DEVNULL
    )


@pytest.mark.parametrize("lang, entry", [("ts", "index.ts"), ("js", "index.js")])
def test_new_build_deploy_invoke_logs(ts_server: Server, tmp_path: Path, lang: str, entry: str) -> None:
    name = f"hello-{lang}"
    made = cli(None, "function", "new", name, "--lang", lang, "--dir", str(tmp_path))
    assert made.returncode == 0, made.stderr
    folder = tmp_path / name
    assert (folder / entry).is_file() and (folder / "_shared" / f"cors.{lang}").is_file()
    assert "Deno.serve(" in (folder / entry).read_text() and "_shared/cors" in (folder / entry).read_text()

    built = cli(ts_server, "build", str(folder))
    assert built.returncode == 0, built.stderr
    out = folder / "dist" / f"{name}.js"
    assert f"built {out}" in built.stdout and "bytes" in built.stdout
    assert out.is_file() and out.with_suffix(".js.map").is_file() and (folder / entry).is_file()

    deployed = cli(ts_server, "deploy", str(folder), "--config", "GREETING=Hej")
    assert deployed.returncode == 0, deployed.stderr
    assert deployed.stdout.startswith(f"deployed {name} v1 ")

    invoked = cli(ts_server, "invoke", name, "--data", '{"name": "you"}')
    assert invoked.returncode == 0, invoked.stderr
    assert json.loads(invoked.stdout) == {"message": "Hello you!", "greeting": "Hej"}
    with ts_server.client() as c:
        r = c.get(f"/functions/v1/{name}")
        assert r.status_code == 200 and r.json()["message"] == "Hello world!"
        pre = c.options(
            f"/functions/v1/{name}",
            headers={"origin": "https://app.example.com", "access-control-request-method": "POST"},
        )
        assert pre.status_code == 200 and pre.headers["access-control-allow-origin"] == "*"

    def logged() -> bool:
        out = cli(ts_server, "logs", name, "--lines", "50")
        return out.returncode == 0 and f"Hello from {name}!" in out.stdout

    poll("the top level's console.log in the function log", logged, timeout=10)

    listed = cli(ts_server, "list", "--json")
    row = next(r for r in json.loads(listed.stdout) if r["function"] == name)
    assert row["version"] == 1 and set(row["wasi"]) >= {"clocks", "random", "stdio", "env"}
