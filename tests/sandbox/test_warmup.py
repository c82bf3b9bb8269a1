"""The built-in warm-up guest (hive/sandbox/warmup.py) that a worker calls before it serves."""

from __future__ import annotations

from pathlib import Path

from hive.sandbox import Sandbox, warm_up


def test_warm_up_calls_its_guest_on_both_engines(tmp_path: Path) -> None:
    sandbox = Sandbox(tmp_path / "cache")
    try:
        assert warm_up(sandbox, rounds=2) == 4
        artifacts = sorted(p.name for p in sandbox.cache_dir.glob("warmup-*.cwasm"))
        assert len(artifacts) == 2  # one per engine (with and without fuel)
        assert warm_up(sandbox, rounds=1) == 2  # from the cached artifacts
        assert sorted(p.name for p in sandbox.cache_dir.glob("*.cwasm")) == artifacts
    finally:
        sandbox.close()
