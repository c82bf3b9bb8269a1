"""Deploying JavaScript: what the server refuses (and how it says so), what a build refuses, the kept
version across restarts of the engine's cache, and how long a TypeScript deploy takes (printed, not asserted)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from hive.js.server import JsBlob
from tests.support import BIN, Server

pytestmark = pytest.mark.slow

JS = '{"kind": "js"}'


def deploy_js(server: Server, name: str, source: bytes, manifest: str = JS) -> httpx.Response:
    with server.client() as c:
        return c.post(
            "/api/v1/edge/deploy",
            headers=server.admin,
            data={"function": name, "manifest": manifest},
            files={"wasm": (f"{name}.js", source, "text/javascript")},
        )


def ts_folder(root: Path, name: str, source: str) -> Path:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "index.ts").write_text(source)
    (folder / "hive.toml").write_text(f'[function]\nname = "{name}"\nlanguage = "typescript"\n')
    return folder


def build(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(BIN / "edge-hive"), "function", "build", str(folder)],
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def test_plain_javascript_deploys_with_kind_js(ts_server: Server) -> None:
    r = deploy_js(ts_server, "plain", b'Deno.serve(() => new Response("plain js"));')
    assert r.status_code == 201, r.text
    assert r.json()["wasi"] == ["clocks", "random", "stdio", "env"]  # what the engine imports, recorded
    with ts_server.client() as c:
        assert c.get("/functions/v1/plain").text == "plain js"
        assert c.get("/api/v1/edge/plain").text == "plain js"


@pytest.mark.parametrize(
    "source, phrase",
    [
        (b"Deno.serve((req) => { return new Response( });", "SyntaxError"),
        (
            b'const x = 1;\nthrow new TypeError("bad config at load");\nDeno.serve(() => new Response(""));',
            "TypeError: bad config at load",
        ),
        (b"export const x = 1;", "never registered a handler"),
    ],
)
def test_code_that_does_not_load_is_a_422_with_the_js_error(ts_server: Server, source: bytes, phrase: str) -> None:
    r = deploy_js(ts_server, "broken", source)
    assert r.status_code == 422, r.text
    assert r.json()["error"] == "js_load_failed" and phrase in r.json()["message"], r.json()
    with ts_server.client() as c:
        assert c.get("/functions/v1/broken").status_code == 404  # nothing was deployed


def test_a_throwing_top_level_is_reported_at_its_ts_line(ts_server: Server, tmp_path: Path) -> None:
    folder = ts_folder(
        tmp_path,
        "toplevel",
        'const key: string | undefined = Deno.env.get("KEY");\n'
        'if (!key) {\n  throw new Error("KEY is not set");\n}\n'
        "Deno.serve(() => new Response(key));\n",
    )
    assert build(folder).returncode == 0
    r = deploy_js(ts_server, "toplevel", (folder / "dist" / "toplevel.js").read_bytes())
    assert r.status_code == 422 and "Error: KEY is not set" in r.json()["message"]
    assert "index.ts:3:" in r.json()["message"] and "function.js" not in r.json()["message"], r.json()
    ok = deploy_js(
        ts_server, "toplevel", (folder / "dist" / "toplevel.js").read_bytes(), '{"kind": "js", "config": {"KEY": "k"}}'
    )
    assert ok.status_code == 201
    with ts_server.client() as c:
        assert c.get("/functions/v1/toplevel").text == "k"


def test_bytecode_and_wasm_are_refused_as_js(ts_server: Server) -> None:
    blob = JsBlob("0" * 64, b"\0hive-qjs-bc\1\1" + b"\x01" * 32, b"", None).pack()
    for upload in (b"\0hive-qjs-bc\1\1" + b"\x01" * 32, blob):
        r = deploy_js(ts_server, "bytecode", upload)
        assert r.status_code == 422 and "never as bytecode" in r.json()["message"]
    r = deploy_js(ts_server, "wasmjs", b"\0asm\1\0\0\0")
    assert r.status_code == 422 and "WebAssembly module" in r.json()["message"]
    r = deploy_js(ts_server, "latin", "Deno.serve(() => new Response('é'));".encode("latin-1"))
    assert r.status_code == 422 and "UTF-8" in r.json()["message"]
    assert deploy_js(ts_server, "kind", b"", '{"kind": "python"}').json()["error"] == "invalid_manifest"


def test_imports_a_build_cannot_fetch_fail_naming_them(tmp_path: Path) -> None:
    folder = ts_folder(
        tmp_path,
        "imports",
        'import { assert } from "jsr:@std/assert";\n'
        'import { z } from "https://deno.land/x/zod/mod.ts";\n'
        'import { Buffer } from "node:buffer";\n'
        "Deno.serve(() => { assert(z && Buffer); return new Response(); });\n",
    )
    out = build(folder)
    assert out.returncode == 1
    text = out.stdout + out.stderr
    assert 'cannot bundle "jsr:@std/assert": JSR packages are not reachable' in text
    assert 'cannot bundle "https://deno.land/x/zod/mod.ts"' in text and "npm:" in text and "copy the file" in text
    assert 'cannot bundle "node:buffer"' in text
    assert "index.ts:1:" in text  # esbuild shows where
    assert not (folder / "dist" / "imports.js").exists()


def test_deno_std_serve_esm_sh_and_type_imports_bundle(ts_server: Server, tmp_path: Path) -> None:
    folder = ts_folder(
        tmp_path,
        "stdserve",
        'import "jsr:@supabase/functions-js/edge-runtime.d.ts";\n'
        'import { serve } from "https://deno.land/std@0.168.0/http/server.ts";\n'
        'import { Hono } from "https://esm.sh/hono@4";\n'
        'const app = new Hono().basePath("/stdserve");\n'
        'app.get("/x", (c) => c.text("std serve + esm.sh hono"));\n'
        "serve(app.fetch);\n",
    )
    out = build(folder)
    assert out.returncode == 0, out.stderr
    assert deploy_js(ts_server, "stdserve", (folder / "dist" / "stdserve.js").read_bytes()).status_code == 201
    with ts_server.client() as c:
        assert c.get("/functions/v1/stdserve/x").text == "std serve + esm.sh hono"


def test_a_syntax_error_in_typescript_fails_the_build(tmp_path: Path) -> None:
    folder = ts_folder(tmp_path, "typo", "Deno.serve((req: Request) => {\n  return new Response(;\n});\n")
    out = build(folder)
    assert out.returncode == 1 and "index.ts:2:" in out.stdout + out.stderr


def test_deploy_time_of_a_typescript_function(ts_server: Server, tmp_path: Path) -> None:
    """Deploying a TypeScript function should take well under a second: measured and printed (run with
    -s to see it); the bound is reported, not asserted."""
    examples = Path(__file__).resolve().parent / "functions"
    times = {}
    for name in ("browser-with-cors", "hono-app", "supabase-select"):
        bundle = examples / name / "dist" / f"{name}.js"
        if not bundle.is_file():
            assert build(examples / name).returncode == 0
        body = bundle.read_bytes()
        best = []
        for i in range(3):
            t0 = time.perf_counter()
            r = deploy_js(ts_server, f"timed-{i}", body, json.dumps({"kind": "js", "allowed_hosts": []}))
            best.append(time.perf_counter() - t0)
            assert r.status_code == 201, r.text
        times[name] = (len(body), min(best))
    print("\nTypeScript deploy (HTTP call: compile to bytecode, trial load, record, every worker warm):")
    for name, (size, secs) in times.items():
        print(f"  {name:<18} {size:>8} bytes  {secs * 1000:7.1f} ms")
