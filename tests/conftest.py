"""Shared fixtures: settings in a temp dir, the hello example built from source, and a real gunicorn server.
Helpers that are not fixtures (Server, start_server, free_port, poll, live_workers, ...) live in tests/support.py."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from hive.settings import Settings, load_settings
from tests import support


@pytest.fixture(scope="session", autouse=True)
def library_patches() -> None:
    """What a worker installs at startup (workers.worker.install_library_patches), for the tests that
    run the sandbox and telemetry in this process."""
    from hive import telemetry
    from hive.sandbox import fastcall

    telemetry.install()
    fastcall.install()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return load_settings(env={}, overrides={"data_dir": str(tmp_path / "data"), "admin_token": support.ADMIN_TOKEN})


@pytest.fixture(scope="session")
def hello_wasm(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """functions/hello built from source with the pip-installed zig toolchain."""
    from hive.build import build_function

    folder = tmp_path_factory.mktemp("build") / "hello"
    shutil.copytree(support.ROOT / "functions" / "hello", folder, ignore=shutil.ignore_patterns("*.wasm"))
    return build_function(folder).read_bytes()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[support.Server]:
    s = support.start_server(tmp_path_factory.mktemp("srv") / "data")
    yield s
    s.stop()
