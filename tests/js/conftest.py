"""The JavaScript engine guest, built from source once per test session (cached by its inputs under
$HIVE_JS_BUILD_DIR or build/js-engine), compiled once by a real wasmtime Sandbox."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hive.js import build_engine, default_cache_dir, load_engine
from hive.sandbox import CompiledModule, Sandbox
from tests.js.common import Js


@pytest.fixture(scope="session")
def engine_wasm() -> Path:
    return build_engine(default_cache_dir())


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    s = Sandbox(tmp_path_factory.mktemp("js-cwasm"))
    yield s
    s.close()


@pytest.fixture(scope="session")
def engine(sandbox: Sandbox, engine_wasm: Path) -> CompiledModule:
    return load_engine(sandbox, engine_wasm)


@pytest.fixture
def js(sandbox: Sandbox, engine: CompiledModule) -> Js:
    return Js(sandbox, engine)
