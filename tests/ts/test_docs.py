"""The TypeScript in docs/ is real: the migration page's supabase-js function and its hive.toml deploy
unchanged (but for the project's URL) and read the table as the caller; typescript.md's Hono router
answers under /functions/v1/NAME/*; every hive.toml block of typescript.md is a valid deploy manifest."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from hive.build import deploy_manifest
from hive.manifest import parse_manifest
from tests.support import ROOT, Server
from tests.ts.common import ANON_KEY, TODOS, Api, deploy_folder

pytestmark = pytest.mark.slow

FENCE_RE = re.compile(r"^```([\w-]*)\s*\n(.*?)^```\s*$", re.M | re.S)
PROJECT = "https://your-project.supabase.co"


def block(doc: str, lang: str, containing: str) -> str:
    found = [
        m.group(2)
        for m in FENCE_RE.finditer((ROOT / doc).read_text())
        if m.group(1) == lang and containing in m.group(2)
    ]
    assert len(found) == 1, f"{doc}: {len(found)} ```{lang} blocks contain {containing!r}, expected 1"
    return found[0]


def test_the_migration_pages_supabase_js_function(ts_server: Server, stub: Api, api: str, tmp_path: Path) -> None:
    folder = tmp_path / "supabase" / "functions" / "todos"
    folder.mkdir(parents=True)
    (folder / "index.ts").write_text(block("docs/migrating-from-supabase.md", "ts", "npm:@supabase/supabase-js"))
    toml = block("docs/migrating-from-supabase.md", "toml", 'language = "typescript"')
    (folder / "hive.toml").write_text(toml.replace(PROJECT, api))
    done = deploy_folder(ts_server, folder, f"--config=SUPABASE_ANON_KEY={ANON_KEY}")
    assert done.returncode == 0, done.stdout + done.stderr
    with ts_server.client() as c:
        r = c.get("/functions/v1/todos", headers={"authorization": "Bearer user-jwt"})
    assert r.status_code == 200, r.text
    assert r.json() == TODOS
    assert stub.seen[-1]["apikey"] == ANON_KEY and stub.seen[-1]["authorization"] == "Bearer user-jwt"


def test_typescript_md_router_example(ts_server: Server, tmp_path: Path) -> None:
    folder = tmp_path / "hello"
    folder.mkdir()
    (folder / "index.ts").write_text(block("docs/typescript.md", "ts", 'basePath("/hello")'))
    (folder / "hive.toml").write_text('[function]\nname = "hello"\nlanguage = "typescript"\n')
    done = deploy_folder(ts_server, folder)
    assert done.returncode == 0, done.stdout + done.stderr
    with ts_server.client() as c:
        assert c.get("/functions/v1/hello/users/7").json() == {"id": "7"}


def test_typescript_md_hive_toml_is_a_valid_manifest(tmp_path: Path) -> None:
    text = block("docs/typescript.md", "toml", "[function]")
    (tmp_path / "hive.toml").write_text(text)
    manifest = parse_manifest(json.dumps(deploy_manifest(tmp_path)))
    assert manifest.kind == "js" and manifest.allowed_hosts == ["https://api.example.com"]
