"""The SDK tests' fixtures: a host sandbox per module, the session's builds, and the shared suite's `lang`
(one per SDK) and `sdk_guest` (one per SDK, the C driver natively and as wasm). Helpers live in
tests/sdk/common.py and tests/sdk/langs.py."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from hive.sandbox import Sandbox
from tests.sdk.langs import DRIVERS, LANGS, Builds, Driver, Lang, make_driver


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    s = Sandbox(tmp_path_factory.mktemp("cache"))
    yield s
    s.close()


@pytest.fixture(scope="session")
def sdk_builds(tmp_path_factory: pytest.TempPathFactory) -> Builds:
    """Every language's test guest and hello example, each built from source once, when first asked for."""
    return Builds(tmp_path_factory)


@pytest.fixture(scope="session", params=LANGS)
def lang(request: pytest.FixtureRequest, sdk_builds: Builds) -> Lang:
    """One SDK; narrow a test to some with @pytest.mark.parametrize("lang", [...], indirect=True)."""
    return Lang(request.param, sdk_builds)


@pytest.fixture(params=DRIVERS)
def sdk_guest(request: pytest.FixtureRequest, sdk_builds: Builds, sandbox: Sandbox) -> Driver:
    """A fresh instance of one SDK's test guest; narrow it as `lang` is narrowed."""
    return make_driver(request.param, sdk_builds, sandbox)
