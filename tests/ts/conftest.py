"""A real server with every function of tests/ts/functions deployed unchanged through the CLI (built
with esbuild from npm, compiled by the server's shared engine), a loopback upstream with a
PostgREST-shaped table, and the same functions under Deno (npm's `deno`) when it installs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hive.js import build_engine, default_cache_dir
from tests.support import Server, start_server
from tests.ts.common import ANON_KEY, FUNCTIONS, Api, DenoFunction, deno_binary, deploy_folder, run_under_deno

ECHO_SECRET = "s3cret-echo"
WEBHOOK_SECRET = "whsec_test_0123456789"


@pytest.fixture(scope="session")
def stub() -> Iterator[Api]:
    up = Api()
    up.thread.start()
    assert up.ready.wait(10)
    yield up
    up.stop()


@pytest.fixture(scope="session")
def api(stub: Api) -> str:
    return f"http://127.0.0.1:{stub.port}"


def secrets(api: str) -> dict[str, dict[str, str]]:
    """Each function's environment beyond its hive.toml [config]: what a user passes at deploy."""
    return {
        "echo-secret": {"ECHO_SECRET": ECHO_SECRET},
        "fetch-upstream": {"UPSTREAM_URL": api},
        "webhook": {"WEBHOOK_SECRET": WEBHOOK_SECRET},
        "supabase-select": {"SUPABASE_URL": api, "SUPABASE_ANON_KEY": ANON_KEY},
    }


GRANTS = ("fetch-upstream", "supabase-select")  # allowed_hosts: the upstream


@pytest.fixture(scope="session")
def ts_server(tmp_path_factory: pytest.TempPathFactory, api: str) -> Iterator[Server]:
    engines = default_cache_dir()
    build_engine(engines)  # here, so that no deploy waits for the first engine build
    s = start_server(tmp_path_factory.mktemp("ts") / "data", workers=1, env={"HIVE_JS_BUILD_DIR": str(engines)})
    env = secrets(api)
    try:
        for folder in sorted(p for p in FUNCTIONS.iterdir() if (p / "hive.toml").is_file()):
            extra = [f"--config={k}={v}" for k, v in env.get(folder.name, {}).items()]
            manifest = {"allowed_hosts": [api]} if folder.name in GRANTS else None
            done = deploy_folder(s, folder, *extra, manifest=manifest)
            assert done.returncode == 0, f"{folder.name}:\n{done.stdout}\n{done.stderr}"
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def deno() -> Path | None:
    return deno_binary()


@pytest.fixture(scope="session")
def under_deno(
    deno: Path | None, api: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, DenoFunction]]:
    """Every compared function under Deno, started on first use; skips when Deno does not install."""
    if deno is None:
        pytest.skip("Deno did not install from npm (`npm install deno`): nothing to compare with")
    running: dict[str, DenoFunction] = {}
    env = secrets(api)
    work = tmp_path_factory.mktemp("deno")

    class Lazy(dict[str, DenoFunction]):
        def __missing__(self, name: str) -> DenoFunction:
            base = {"REGION": "eu-west"} if name == "echo-secret" else {}  # hive.toml's [config]
            fn = run_under_deno(deno, FUNCTIONS / name, work / name, {**base, **env.get(name, {})})
            running[name] = fn
            self[name] = fn
            return fn

    try:
        yield Lazy()
    finally:
        for fn in running.values():
            fn.stop()
