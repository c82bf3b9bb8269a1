"""A toolchain error is shown once: `edge-hive function build/deploy` stream the compiler's lines as they come,
and the error that ends the command points to them instead of repeating them."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from hive.build import build_function
from hive.errors import BuildError
from tests.support import BIN, Server

pytestmark = pytest.mark.slow

# A missing ')' on line 5: clang reports "main.c:5:<col>: error: expected ')'" (and notes around it).
BROKEN = """#include "edge_hive.h"

hive_response *handler(const hive_request *req) {
    (void)req;
    return hive_response_text(200, hive_fmt("%d", 42);
}
"""
ERROR_LINE = "main.c:5:"


def broken_function(parent: Path) -> Path:
    folder = parent / "broken"
    folder.mkdir()
    (folder / "hive.toml").write_text('[function]\nname = "broken"\nlanguage = "c"\nsources = ["main.c"]\n')
    (folder / "main.c").write_text(BROKEN)
    return folder


def cli(*args: str, cwd: Path, server: Server | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    if server is not None:
        env.update(HIVE_URL=server.url, HIVE_ADMIN_TOKEN=server.token)
    return subprocess.run(
        [str(BIN / "edge-hive"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith(ERROR_LINE) and "error:" in line]


def check_shown_once(r: subprocess.CompletedProcess[str], folder: Path) -> None:
    output = r.stdout + r.stderr
    assert r.returncode == 1, output
    assert len(error_lines(output)) == 1, output
    assert output.count("expected ')'") == 1, output
    last = r.stderr.strip().splitlines()[-1]
    assert last == "Error: compiling broken failed (exit status 1): see the output above", output
    assert not (folder / "broken.wasm").exists()


def test_build_prints_the_compiler_error_once(tmp_path: Path) -> None:
    folder = broken_function(tmp_path)
    check_shown_once(cli("function", "build", "broken", cwd=tmp_path), folder)


def test_deploy_prints_the_compiler_error_once_and_deploys_nothing(server: Server, tmp_path: Path) -> None:
    folder = broken_function(tmp_path)
    check_shown_once(cli("function", "deploy", "broken", cwd=tmp_path, server=server), folder)
    r = cli("function", "invoke", "broken", cwd=tmp_path, server=server)
    assert r.returncode == 1 and "function_not_found" in r.stdout


def test_without_echo_the_error_carries_the_output(tmp_path: Path) -> None:
    """A caller that shows no progress lines (the library, tests) still gets the compiler's words."""
    folder = broken_function(tmp_path)
    with pytest.raises(BuildError) as info:
        build_function(folder)
    assert len(error_lines(info.value.message)) == 1, info.value.message
