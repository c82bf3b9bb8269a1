"""Every shell block of README.md and docs/deploy.md runs, as written, against a real server.

A reader types the blocks of one page in order into one shell, in the repository's root, with the server
the page assumes running. So does this test: the blocks of a page (```bash / ```sh) run in order in one
`bash -euo pipefail`, in a temp folder holding a copy of functions/ and the repository's .venv, with a real
server (tests/support.start_server) whose data dir is that folder's ./.hive and whose admin token is the
one it generates there. The environment has no HIVE_* variable and no .venv/bin on PATH: what the blocks
need, they set themselves (`source .venv/bin/activate`, `TOKEN=$(cat .hive/admin.token)`).

One thing differs from a reader's machine: other servers may hold port 8443 here, so the test's server
listens on a free port, every `127.0.0.1:8443` in a block is replaced by it, and HIVE_URL names it (the
CLI's default URL stands for 127.0.0.1:8443).

A block that cannot run here (root, systemd, a foreground server, the CI entry itself) is marked with
`<!-- not-run: reason -->` on the line right before it; those are only checked with `bash -n`.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import BIN, ROOT, start_server

pytestmark = pytest.mark.slow

DOCS = ("README.md", "docs/deploy.md")
SHELL_LANGS = frozenset({"bash", "sh"})
DOC_URL = "127.0.0.1:8443"
FENCE_RE = re.compile(r"^\s*```\s*([\w-]*)")
NOT_RUN_RE = re.compile(r"^<!--\s*not-run:(.*?)-->\s*$")
MARK = "@@edge-hive-doc-block {}@@"

# What the pages show a command printing, checked in the output of the block holding the command
# (the command text must be in exactly one run block of that page).
EXPECTED: dict[str, list[tuple[str, str]]] = {
    "README.md": [
        (
            "curl -s http://127.0.0.1:8443/api/v1/edge/hello -d",
            r'\{"message":"Hello, Edge Hive!","timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"\}',
        ),
        ("/api/v1/edge/deploy", r'"function":"hello","version":2,'),
        ("edge-hive function build functions/hello", r"built \S*functions/hello/hello\.wasm \(\d+ bytes\)"),
        ("edge-hive function invoke hello", r'"message": "Hello, you!"'),
        ("edge-hive function list", r"\nhello +2 "),
    ],
    "docs/deploy.md": [
        ("edge-hive --version", r"version \d+\.\d+"),
        ("edge-hive function build functions/hello", r"built \S*functions/hello/hello\.wasm \(\d+ bytes\)"),
        ("-F function=hello", r'\{"function":"hello","version":1,"sha256":"[0-9a-f]{64}","size":\d+,'),
        ("-F function=hello", r'"wasi":\["clocks"\]'),
        ("edge-hive function deploy functions/hello\n", r"deployed hello v2 sha256=[0-9a-f]{12}"),
        ("--manifest manifest.json", r"deployed hello v3 sha256=[0-9a-f]{12}"),
        ('--token "$TOKEN" list', r"\nhello +3 "),
        ("HIVE_DATA_DIR=../.hive", r"\nhello +3 "),
        ("/functions/v1/hello/any/sub/path", r'"message":"Hello, World!"'),
        ("--header X-Trace:1", r'"message": "Hello, you!"'),
        ("--data @body.json", r'"message": "Hello, a file!"'),
        ("edge-hive function versions hello", r"\* +3 "),
        ("edge-hive function rollback hello --to 3", r"hello now serves v2 .*\n(.*\n)*hello now serves v3 "),
        ("edge-hive function delete hello", r"deleted hello"),
        ("edge-hive status", r"master +pid \d+ .*listening on 127\.0\.0\.1:\d+\n(worker +pid \d+ .*\n){2}"),
        ("edge-hive reload", r"sent SIGHUP to the master"),
        ("edge-hive settings", r"data_dir +HIVE_DATA_DIR "),
        ("/metrics", r"# TYPE \w+"),
    ],
}
# Pages that assume `scripts/dev serve` is running: it has deployed the examples (these pages use hello).
NEEDS_EXAMPLES = {"README.md": ("hello",)}


@dataclass(frozen=True)
class Block:
    doc: str
    line: int  # of the opening fence, 1-based
    text: str
    not_run: str | None  # the reason, for a block marked not-run


def shell_blocks(doc: str) -> list[Block]:
    """The page's shell blocks in order. Raises for a not-run mark that is not right before a shell block."""
    lines = (ROOT / doc).read_text().splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = FENCE_RE.match(lines[i])
        mark = NOT_RUN_RE.match(lines[i])
        if mark and not (i + 1 < len(lines) and (f := FENCE_RE.match(lines[i + 1])) and f.group(1) in SHELL_LANGS):
            raise AssertionError(f"{doc}:{i + 1}: a not-run mark must be right before a ```bash or ```sh block")
        if not m:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].strip().startswith("```")), None)
        assert end is not None, f"{doc}:{i + 1}: unclosed code block"
        if m.group(1) in SHELL_LANGS:
            before = NOT_RUN_RE.match(lines[i - 1]) if i > 0 else None
            reason = before.group(1).strip() if before else None
            blocks.append(Block(doc, i + 1, "\n".join(lines[i + 1 : end]) + "\n", reason))
        i = end + 1
    return blocks


def run_blocks(doc: str) -> list[Block]:
    return [b for b in shell_blocks(doc) if b.not_run is None]


def reader_env(url: str) -> dict[str, str]:
    """This process's environment as a reader's shell has it: no HIVE_* and no active venv."""
    venv_bins = {BIN.resolve(), (ROOT / ".venv" / "bin").resolve()}
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_") and k != "VIRTUAL_ENV"}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if p and Path(p).resolve() not in venv_bins
    )
    env["HIVE_URL"] = url  # the CLI's default, 127.0.0.1:8443, is the test server's port here
    return env


def split_output(output: str, count: int) -> list[str]:
    """Each block's share of the merged output, by the marks the script prints before each block (on a line
    of their own: the output before may not end with a newline, as curl's does not)."""
    parts: list[str] = [""] * count
    current = -1
    for line in output.splitlines(keepends=True):
        m = re.fullmatch(MARK.format(r"(\d+)") + r"\n?", line)
        if m:
            current = int(m.group(1))
        elif current >= 0:
            parts[current] += line
    return parts


@pytest.mark.parametrize("doc", DOCS)
def test_every_block_is_run_or_marked_with_a_reason(doc: str) -> None:
    blocks = shell_blocks(doc)
    assert run_blocks(doc), f"{doc} has no shell block that runs"
    for b in blocks:
        if b.not_run is not None:
            assert len(b.not_run) >= 10, f"{doc}:{b.line}: say why the block cannot run"
    text = (ROOT / doc).read_text()
    others = {lang for lang in re.findall(r"^```(\S+)", text, re.M)} & {"console", "shell", "zsh", "shell-session"}
    assert not others, f"{doc}: write shell as ```bash so it is run ({others})"
    for snippet, _ in EXPECTED[doc]:
        holders = [b for b in run_blocks(doc) if snippet in b.text]
        assert len(holders) == 1, f"{doc}: {snippet!r} is in {len(holders)} run blocks, expected 1"


@pytest.mark.parametrize(
    "block", [b for doc in DOCS for b in shell_blocks(doc) if b.not_run is not None], ids=lambda b: f"{b.doc}:{b.line}"
)
def test_not_run_blocks_are_valid_bash(block: Block) -> None:
    r = subprocess.run(["bash", "-n"], input=block.text, capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, f"{block.doc}:{block.line}: {r.stderr}"


def test_scripts_dev_takes_serve_test_and_setup() -> None:
    """README's first block (scripts/dev serve, scripts/dev test) is CI's own entry, so it is not run
    here; the script it names exists, is executable, and has those commands (and setup)."""
    script = ROOT / "scripts" / "dev"
    assert script.is_file() and os.access(script, os.X_OK)
    assert subprocess.run(["bash", "-n", str(script)], timeout=30).returncode == 0
    source = script.read_text()
    for command in ("serve", "test", "setup"):
        assert re.search(rf"^\s*{command}\)", source, re.M), f"scripts/dev has no {command} command"
    r = subprocess.run(
        [str(script), "no-such-command"], capture_output=True, text=True, timeout=30, stdin=subprocess.DEVNULL
    )
    assert r.returncode == 2 and "usage: scripts/dev serve|test|setup" in r.stderr
    readme = shell_blocks("README.md")[0]
    assert readme.not_run and "scripts/dev serve" in readme.text and "scripts/dev test" in readme.text


@pytest.mark.timeout(900)
@pytest.mark.parametrize("doc", DOCS)
def test_blocks_run_against_a_real_server(doc: str, tmp_path: Path) -> None:
    blocks = run_blocks(doc)
    repo = tmp_path / "repo"
    shutil.copytree(
        ROOT / "functions",
        repo / "functions",
        ignore=shutil.ignore_patterns("*.wasm", "target", "node_modules", ".zig-cache", "zig-out"),
    )
    (repo / ".venv").symlink_to(ROOT / ".venv")
    server = start_server(repo / ".hive", token=None)  # it generates .hive/admin.token, as `scripts/dev serve`'s does
    try:
        env = reader_env(server.url)
        for name in NEEDS_EXAMPLES.get(doc, ()):  # what `scripts/dev serve` does for each example
            r = subprocess.run(
                [str(BIN / "edge-hive"), "function", "--url", server.url, "deploy", f"functions/{name}"],
                cwd=repo,
                env={**env, "HIVE_DATA_DIR": str(repo / ".hive")},
                capture_output=True,
                text=True,
                timeout=600,
                stdin=subprocess.DEVNULL,
            )
            assert r.returncode == 0, r.stdout + r.stderr
        port = server.url.rsplit(":", 1)[1]
        script = "".join(
            f"printf '\\n{MARK.format(i)}\\n'\n" + b.text.replace(DOC_URL, f"127.0.0.1:{port}")
            for i, b in enumerate(blocks)
        )
        # stderr merged at the source, so each line lands in the block that printed it
        r = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script],
            cwd=repo,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=840,
            stdin=subprocess.DEVNULL,
        )
    finally:
        server.stop()
    outputs = split_output(r.stdout, len(blocks))
    reached = max((i for i in range(len(blocks)) if MARK.format(i) in r.stdout), default=-1)
    if r.returncode != 0:
        assert reached >= 0, r.stdout
        b = blocks[reached]
        pytest.fail(
            f"{doc}:{b.line}: the block exited with status {r.returncode}\n--- block\n{b.text}"
            f"--- its output\n{outputs[reached]}--- server log (tail)\n{server.log()[-3000:]}"
        )
    assert reached == len(blocks) - 1, r.stdout
    for snippet, pattern in EXPECTED[doc]:
        i = next(i for i, b in enumerate(blocks) if snippet in b.text)
        assert re.search(pattern, outputs[i]), (
            f"{doc}:{blocks[i].line}: expected /{pattern}/ in the output of\n{blocks[i].text}--- got\n{outputs[i]}"
        )
