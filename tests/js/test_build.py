"""Building the engine: the pinned sdist is checked, and the cache key follows the sources."""

from __future__ import annotations

from pathlib import Path

import pytest

from hive.errors import BuildError
from hive.js import engine

pytestmark = pytest.mark.slow  # the session fixture builds the engine when build/js-engine lacks it


def test_a_local_sdist_with_another_hash_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / engine.QUICKJS_SDIST
    fake.write_bytes(b"not the sdist")
    monkeypatch.setenv(engine.SDIST_ENV, str(fake))
    with pytest.raises(BuildError, match="sha256 differs"):
        engine.fetch_sdist(tmp_path / "cache")


def test_the_cached_sdist_is_reused_and_checked(engine_wasm: Path) -> None:
    cache = engine_wasm.parent.parent
    sdist = engine.fetch_sdist(cache)  # no download: the session's build left it in the cache
    assert sdist == cache / "sdist" / engine.QUICKJS_SDIST
    assert engine.build_engine(cache) == engine_wasm  # cached by its inputs
    assert engine_wasm.parent.name.endswith(engine.engine_key())


def test_the_prelude_is_one_factory_function() -> None:
    src = engine.prelude_source().decode()
    assert src.startswith('(function (native) {\n"use strict";')
    assert src.rstrip().endswith("return api;\n\n})")
    names = [p.name for p in engine.prelude_files()]
    assert names == sorted(names) and names[0] == "00_base.js" and names[-1] == "99_end.js"
