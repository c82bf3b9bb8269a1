"""The code in the C and migration pages is real: every C block builds (fragments inside a handler), every
manifest parses, and the migration page's functions do what it says on a real server, against a stand-in
for a Supabase project on 127.0.0.1 (its JWKS and a PostgREST table). The isolation sentences of the
SDK pages are checked too: a static counter persists under "warm" and never under "request"."""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from hive.build import build_function, deploy_manifest
from hive.manifest import parse_manifest
from tests.support import BIN, ROOT, Server, start_server

pytestmark = pytest.mark.slow

C_DOCS = ("docs/sdk-c.md", "docs/migrating-from-supabase.md", "docs/functions.md")
MANIFEST_DOCS = ("docs/migrating-from-supabase.md", "docs/functions.md")
MIGRATING = "docs/migrating-from-supabase.md"
PROJECT = "https://your-project.supabase.co"  # the page's placeholder project
FENCE_RE = re.compile(r"^```([\w-]*)\s*\n(.*?)^```\s*$", re.M | re.S)


def blocks(doc: str, lang: str) -> list[tuple[int, str]]:
    text = (ROOT / doc).read_text()
    return [(text[: m.start()].count("\n") + 1, m.group(2)) for m in FENCE_RE.finditer(text) if m.group(1) == lang]


def block(doc: str, lang: str, containing: str) -> str:
    found = [b for _, b in blocks(doc, lang) if containing in b]
    assert len(found) == 1, f"{doc}: {len(found)} ```{lang} blocks contain {containing!r}, expected 1"
    return found[0]


def as_source(code: str) -> str:
    """A page's C block as a buildable file: a fragment becomes the body of a handler, and the handler's
    prototype gets a definition."""
    if "handler(" in code and "{" not in code:
        code += "hive_response *handler(const hive_request *req) { (void)req; return NULL; }\n"
    elif "handler(" not in code:
        code = (
            f'hive_response *handler(const hive_request *req) {{\n{code}    return hive_response_text(200, "");\n}}\n'
        )
    if '#include "edge_hive.h"' not in code:
        code = '#include "edge_hive.h"\n' + code
    return code


def c_folder(parent: Path, name: str, source: str, toml_extra: str = "") -> Path:
    folder = parent / name
    folder.mkdir(parents=True)
    (folder / "hive.toml").write_text(
        f'[function]\nname = "{name}"\nlanguage = "c"\nsources = ["main.c"]\n{toml_extra}'
    )
    (folder / "main.c").write_text(source)
    return folder


C_BLOCKS = [(doc, line, code) for doc in C_DOCS for line, code in blocks(doc, "c")]


@pytest.mark.parametrize(("doc", "line", "code"), C_BLOCKS, ids=[f"{d}:{n}" for d, n, _ in C_BLOCKS])
def test_c_blocks_build(doc: str, line: int, code: str, tmp_path: Path) -> None:
    """Each block compiles and passes the build's module check (the deploy's, every WASI group granted)."""
    wasm = build_function(c_folder(tmp_path, "example", as_source(code)))
    assert wasm.read_bytes()[:4] == b"\0asm"


def test_pages_have_c_blocks() -> None:
    assert len([b for b in C_BLOCKS if b[0] == "docs/sdk-c.md"]) >= 5
    assert len([b for b in C_BLOCKS if b[0] == MIGRATING]) >= 4


@pytest.mark.parametrize("doc", MANIFEST_DOCS)
def test_manifests_in_the_pages_are_valid(doc: str, tmp_path: Path) -> None:
    """JSON blocks as deploy manifests; hive.toml blocks as `edge-hive function deploy` reads them."""
    jsons = blocks(doc, "json")
    assert jsons, f"{doc} has no JSON manifest"
    for _, text in jsons:
        parse_manifest(text)  # raises InvalidManifest naming the problem
    for i, (_, text) in enumerate(blocks(doc, "toml")):
        if "[function]" not in text:  # a section of a hive.toml
            text = f'[function]\nname = "example"\nlanguage = "c"\n{text}'
        file = tmp_path / f"{i}" / "hive.toml"
        file.parent.mkdir()
        file.write_text(text)
        parse_manifest(json.dumps(deploy_manifest(file)))


# --- a stand-in for a Supabase project: JWKS and one PostgREST table ---------------------------------------

TODOS = [{"id": 1, "title": "ship the migration"}]


class FakeProject:
    def __init__(self) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        jwk = ECAlgorithm.to_jwk(self.key.public_key(), as_dict=True)
        self.jwks = {"keys": [{**jwk, "kid": "key-1", "alg": "ES256", "use": "sig"}]}
        self.seen: list[dict[str, str]] = []
        project = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                if self.path == "/auth/v1/.well-known/jwks.json":
                    return self.answer(200, project.jwks)
                if self.path == "/rest/v1/todos?select=id,title":
                    project.seen.append({k.lower(): v for k, v in self.headers.items()})
                    return self.answer(200, TODOS)
                return self.answer(404, {"message": "no such route"})

            def answer(self, status: int, body: object) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def token(self, **claims: object) -> str:
        now = int(time.time())
        body = {
            "sub": "user-7",
            "aud": "authenticated",
            "iss": f"{self.url}/auth/v1",
            "role": "authenticated",
            "iat": now,
            "exp": now + 600,
            **claims,
        }
        return jwt.encode(body, self.key, algorithm="ES256", headers={"kid": "key-1"})

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One worker, so consecutive calls meet the same warm instance."""
    s = start_server(tmp_path_factory.mktemp("docsrv") / "data", workers=1)
    yield s
    s.stop()


@pytest.fixture
def project() -> Iterator[FakeProject]:
    p = FakeProject()
    yield p
    p.close()


def deploy(server: Server, *args: str, cwd: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    env.update(HIVE_URL=server.url, HIVE_ADMIN_TOKEN=server.token)
    r = subprocess.run(
        [str(BIN / "edge-hive"), "function", "deploy", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_hello_world_answers_as_on_supabase(one_worker: Server, tmp_path: Path) -> None:
    folder = tmp_path / "functions" / "hello-world"
    folder.mkdir(parents=True)
    (folder / "main.c").write_text(block(MIGRATING, "c", "Hello %s!"))
    (folder / "hive.toml").write_text(block(MIGRATING, "toml", 'name = "hello-world"'))
    deploy(one_worker, "functions/hello-world", cwd=tmp_path)
    with one_worker.client() as c:
        r = c.post("/functions/v1/hello-world", json={"name": "Functions"})
        assert r.status_code == 200 and r.json() == {"message": "Hello Functions!"}
        assert r.headers["content-type"] == "application/json"
        assert c.post("/functions/v1/hello-world", content=b"not json").status_code == 400


def test_todos_reads_postgrest_as_the_verified_caller(one_worker: Server, project: FakeProject, tmp_path: Path) -> None:
    c_folder(tmp_path / "functions", "todos", block(MIGRATING, "c", "/rest/v1/todos"))
    manifest = tmp_path / "todos.json"
    manifest.write_text(block(MIGRATING, "json", '"allowed_hosts"').replace(PROJECT, project.url))
    deploy(
        one_worker,
        "functions/todos",
        "--manifest",
        str(manifest),
        "--config",
        "SUPABASE_ANON_KEY=anon-key-0123",
        cwd=tmp_path,
    )
    token = project.token()
    with one_worker.client() as c:
        r = c.get("/functions/v1/todos", headers={"authorization": f"Bearer {token}"})
        assert r.status_code == 200, r.text
        assert r.json() == TODOS
        seen = project.seen[-1]
        assert seen["apikey"] == "anon-key-0123" and seen["authorization"] == f"Bearer {token}"

        calls = len(project.seen)
        r = c.get("/functions/v1/todos")
        assert r.status_code == 401 and r.json()["error"] == "missing_credentials"
        r = c.get("/functions/v1/todos", headers={"authorization": f"Bearer {project.token(aud='anon')}"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        r = c.get("/functions/v1/todos", headers={"authorization": f"Bearer {project.token(iss='https://elsewhere')}"})
        assert r.status_code == 401 and r.json()["error"] == "invalid_token"
        assert len(project.seen) == calls  # refused before the guest ran


COUNTER = """#include "edge_hive.h"

static long calls;

hive_response *handler(const hive_request *req) {
    (void)req;
    return hive_response_json(200, hive_fmt("{\\"calls\\":%ld}", ++calls));
}
"""


@pytest.mark.parametrize(("isolation", "expected"), [("warm", [1, 2, 3]), ("request", [1, 1, 1])])
def test_isolation_as_the_pages_say(one_worker: Server, tmp_path: Path, isolation: str, expected: list[int]) -> None:
    name = f"counter-{isolation}"
    build_function(c_folder(tmp_path, name, COUNTER))
    r = one_worker.deploy(name, (tmp_path / name / f"{name}.wasm").read_bytes(), json.dumps({"isolation": isolation}))
    assert r.status_code == 201, r.text
    with httpx.Client(base_url=one_worker.url, timeout=30) as c:
        got = [c.post(f"/functions/v1/{name}").json()["calls"] for _ in expected]
    assert got == expected
