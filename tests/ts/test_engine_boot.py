"""A worker that boots where the JS engine is not built yet (a new machine, a new engine version) does not
wait for the build (longer than gunicorn lets a worker boot): it serves at once, builds the engine in the
background, and its JS functions answer once it is there. Builds the engine from source: about 35 s."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from hive.js import QUICKJS_SDIST_VERSION, default_cache_dir
from tests.guests import const_wat, wat
from tests.support import poll, start_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


def test_a_worker_boots_and_builds_the_engine_in_the_background(tmp_path: Path) -> None:
    shared = default_cache_dir()
    data = tmp_path / "data"
    s = start_server(data, workers=1, env={"HIVE_JS_BUILD_DIR": str(shared)})
    try:
        with s.client() as c:
            r = c.post(
                "/api/v1/edge/deploy",
                headers=s.admin,
                data={"function": "js", "manifest": json.dumps({"kind": "js"})},
                files={"wasm": ("js.js", b'Deno.serve(() => new Response("built"));', "text/javascript")},
            )
            assert r.status_code == 201, r.text
            assert s.deploy("wasm", wat(const_wat("core module"))).status_code == 201
    finally:
        s.stop()
    # The same data dir on a "machine" without the engine: an empty build dir (the sdist from the cache).
    fresh = tmp_path / "no-engine-yet"
    env = {
        "HIVE_JS_BUILD_DIR": str(fresh),
        "HIVE_QUICKJS_SDIST": str(shared / "sdist" / f"quickjs_ng-{QUICKJS_SDIST_VERSION}.tar.gz"),
    }
    s = start_server(data, workers=1, env=env)  # ready (60 s at most) long before an engine could be built
    try:
        with s.client() as c:
            assert c.get("/api/v1/edge/wasm").text == "core module"  # the other functions serve meanwhile

            def served() -> bool:
                try:
                    return httpx.get(s.url + "/functions/v1/js", timeout=5).text == "built"
                except httpx.HTTPError:
                    return False

            poll("the JS function, once the engine is built", served, timeout=400, interval=0.5)
        assert "building it in the background" in s.log()
        assert list(fresh.glob("engine-*/hive-js.wasm"))
    finally:
        s.stop()
