"""Helpers for the TypeScript compatibility suite: the upstream and PostgREST stub, deploying a function
folder with the CLI, and running the same folder under Deno (npm's `deno` package) for comparison."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import httpx

from hive.toolchains import typescript
from tests.io.conftest import Upstream
from tests.support import BIN, Server, free_port

FUNCTIONS = Path(__file__).resolve().parent / "functions"
ANON_KEY = "anon-key-for-tests-0123456789"
ROWS = [{"id": 1, "name": "ada"}, {"id": 2, "name": "grace"}, {"id": 3, "name": "edsger"}]
TODOS = [{"id": 1, "title": "migrate"}, {"id": 2, "title": "deploy unchanged"}]
DENO_VERSION = "2.9.6"


class Api(Upstream):
    """tests/io's upstream plus PostgREST-shaped tables `t` and `todos` at /rest/v1/ (the anon key required)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[dict[str, str]] = []  # the headers of each PostgREST request

    async def _route(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes, dict[str, str]]:
        url = urllib.parse.urlsplit(target)
        if url.path in ("/rest/v1/t", "/rest/v1/todos"):
            self.seen.append(headers)
            if headers.get("apikey") != ANON_KEY:
                return 401, "application/json", b'{"message":"Invalid API key"}', {}
            q = urllib.parse.parse_qs(url.query)
            cols = q.get("select", ["*"])[0].replace(" ", "")
            rows = ROWS if url.path == "/rest/v1/t" else TODOS
            if "id" in q:  # id=eq.N
                rows = [r for r in rows if f"eq.{r['id']}" == q["id"][0]]
            if cols != "*":
                rows = [{k: r[k] for k in cols.split(",")} for r in rows]
            return (
                200,
                "application/json; charset=utf-8",
                json.dumps(rows).encode(),
                {"content-range": f"0-{len(rows) - 1}/*"},
            )
        return await super()._route(method, target, headers, body)


def deploy_folder(
    server: Server, folder: Path, *extra: str, manifest: dict | None = None
) -> subprocess.CompletedProcess[str]:
    """`edge-hive function deploy FOLDER` (which builds first), as a user runs it."""
    args = [
        str(BIN / "edge-hive"),
        "function",
        "--url",
        server.url,
        "--token",
        server.token,
        "deploy",
        str(folder),
        *extra,
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:  # not in the function's folder
        if manifest is not None:
            json.dump(manifest, f)
            f.flush()
            args += ["--manifest", f.name]
        return subprocess.run(args, capture_output=True, text=True, timeout=600, stdin=subprocess.DEVNULL)


def deno_binary() -> Path | None:
    """Deno from npm (the `deno` package ships the binary), installed once into the TypeScript cache."""
    directory = typescript.cache_dir() / f"deno-{DENO_VERSION}"
    try:
        typescript._npm_install(directory, {"deno": DENO_VERSION}, f"deno {DENO_VERSION}", None)
    except Exception:
        return None
    exe = directory / "node_modules" / ".bin" / "deno"
    return exe if exe.exists() else None


# Loaded first by the wrapper: the function's Deno.serve(...) listens where the test says.
_SERVE_ON_PORT = """
const port = Number(Deno.env.get("DENO_TEST_PORT"));
const serve = Deno.serve;
// deno-lint-ignore no-explicit-any
(Deno as any).serve = (a: any, b: any) => {
  const handler = typeof a === "function" ? a : (b ?? a.handler);
  return serve({ port, hostname: "127.0.0.1", onListen() { console.log("LISTENING"); } }, handler);
};
"""


@dataclass
class DenoFunction:
    proc: subprocess.Popen[bytes]
    url: str
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)


def run_under_deno(deno: Path, folder: Path, work: Path, env: dict[str, str]) -> DenoFunction:
    """The function's index.ts under `deno run` on a free port, unchanged: a wrapper module patches the
    port, then imports it. jsr: type imports map to an empty file (jsr.io is not reachable here)."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "serve_on_port.ts").write_text(_SERVE_ON_PORT)
    (work / "empty.d.ts").write_text("export {};\n")
    (work / "main.ts").write_text(f'import "./serve_on_port.ts";\nimport "{(folder / "index.ts").as_uri()}";\n')
    (work / "deno.json").write_text(
        json.dumps({"imports": {"jsr:@supabase/functions-js/edge-runtime.d.ts": "./empty.d.ts"}})
    )
    port = free_port()
    log = work / "deno.log"
    full_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("HIVE_")},
        **env,
        "DENO_TEST_PORT": str(port),
        "DENO_DIR": str(typescript.cache_dir() / "deno-dir"),
        "NO_COLOR": "1",
        "DENO_NO_UPDATE_CHECK": "1",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(deno), "run", "-A", "--no-prompt", "--config", str(work / "deno.json"), str(work / "main.ts")],
            cwd=work,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=full_env,
            start_new_session=True,
        )
    fn = DenoFunction(proc, f"http://127.0.0.1:{port}", log)
    deadline = time.monotonic() + 180  # the first run downloads the npm packages into DENO_DIR
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"deno exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        if "LISTENING" in log.read_text(errors="replace"):
            return fn
        time.sleep(0.05)  # polling interval
    fn.stop()
    raise RuntimeError(f"deno did not listen in time:\n{log.read_text(errors='replace')}")


def answer(r: httpx.Response, headers: tuple[str, ...] = ()) -> tuple[int, object, dict[str, str | None]]:
    """What the comparison looks at: status, the body (JSON when it is JSON), the named headers."""
    try:
        body: object = r.json()
    except ValueError:
        body = r.text
    return r.status_code, body, {h: r.headers.get(h) for h in headers}
