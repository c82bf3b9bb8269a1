"""The private-library patches are installed explicitly (the worker calls install() after fork), each
behind a version check, and pyproject.toml pins each patched library to the range checked. Each case
runs in a fresh interpreter: importing a module must change nothing, and the patches are process-wide."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]


def run(code: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    full = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    full.update({"PYTHONPATH": str(ROOT), **(env or {})})
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full, timeout=120)
    assert r.returncode == 0, r.stderr
    return r


def test_importing_fastcall_patches_nothing_and_install_does() -> None:
    r = run("""
import json
from wasmtime import _func, _linker
original = _func.trampoline
from hive.sandbox import fastcall
before = (_func.trampoline is original, fastcall.installed())
first, second = fastcall.install(), fastcall.install()
print(json.dumps({"untouched_on_import": before == (True, False), "first": first, "second": second,
                  "swapped": _func.trampoline is fastcall._trampoline and _linker.trampoline is fastcall._trampoline
                             and _func.maybe_raise_last_exn is fastcall.maybe_raise_last_exn}))
""")
    assert json.loads(r.stdout) == {"untouched_on_import": True, "first": True, "second": True, "swapped": True}


METRICS_IN_A_WORKER = """
import json, os, sys
from prometheus_client import values
original = values.ValueClass
from hive import telemetry
untouched = values.ValueClass is original
ok, again = telemetry.install(), telemetry.install()
from hive.metrics import metrics
m = metrics()
m.invocations.labels("f", "200").inc()
child = os.fork()
if child == 0:  # a process forked after install writes its own files, under its own pid
    m.invocations.labels("f", "200").inc()
    os._exit(0)
os.waitpid(child, 0)
print(json.dumps({"untouched_on_import": untouched, "ok": ok, "again": again, "parent": os.getpid(),
                  "child": child, "files": sorted(os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]))}))
"""


def test_telemetry_install_caches_the_pid_and_follows_forks(tmp_path: Path) -> None:
    r = run(METRICS_IN_A_WORKER, env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)})
    out = json.loads(r.stdout)
    assert out["untouched_on_import"] and out["ok"] and out["again"]
    assert f"counter_{out['parent']}.db" in out["files"] and f"counter_{out['child']}.db" in out["files"]


def test_telemetry_install_refuses_once_metrics_exist(tmp_path: Path) -> None:
    r = run(
        """
from hive.metrics import metrics
metrics()
from hive import telemetry
print(telemetry.install())
""",
        env={"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
    )
    assert r.stdout.strip() == "False"
    assert "metrics already exist" in r.stderr


def test_telemetry_install_is_not_needed_in_one_process() -> None:
    r = run("from hive import telemetry; print(telemetry.install())")
    assert r.stdout.strip() == "False" and r.stderr == ""


PRIVATELY_USED = {"wasmtime", "uvicorn", "uvicorn-worker", "gunicorn", "httptools", "prometheus-client"}


def requirements() -> dict[str, Requirement]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {canonicalize_name(r.name): r for r in map(Requirement, deps)}


def upper_bound(name: str) -> str:
    (bound,) = [spec.version for spec in requirements()[name].specifier if spec.operator == "<"]
    return bound


def test_every_library_used_privately_is_pinned_and_the_installed_one_fits() -> None:
    reqs = requirements()
    for name in PRIVATELY_USED:
        assert upper_bound(name), name
        assert reqs[name].specifier.contains(version(name)), (name, version(name), str(reqs[name].specifier))


def test_the_pins_match_the_versions_the_patches_check() -> None:
    from hive import telemetry
    from hive.sandbox import fastcall

    low, high = telemetry.PROMETHEUS_TESTED
    assert upper_bound("prometheus-client") == f"{high[0]}.{high[1] + 1}"
    assert f">={low[0]}.{low[1]}" in str(requirements()["prometheus-client"].specifier)
    assert upper_bound("wasmtime") == str(int(fastcall.TESTED_MAJOR) + 1)
