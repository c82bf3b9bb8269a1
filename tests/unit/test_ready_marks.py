"""workers.worker.ReadyMarks: an old worker waits for a younger sibling (its replacement) that is
alive and not yet accepting, and for nothing else. Real processes: the test process plays
gunicorn's master, its children the workers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from hive.marks import start_ticks
from workers.worker import ReadyMarks

ROOT = Path(__file__).resolve().parents[2]
OLD_WORKER = """
import sys
from pathlib import Path
from typing import Any
from workers.worker import ReadyMarks
marks = ReadyMarks(Path(sys.argv[1]))
marks.list_every_s = 0  # list the siblings on every question
for _ in sys.stdin:
    print(marks.successors_warming(), flush=True)
"""


def sibling() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)


def started_after(other: subprocess.Popen[Any], spawn: Callable[[], subprocess.Popen[Any]]) -> subprocess.Popen[Any]:
    """A process from spawn() that started in a later clock tick than `other` (start ticks count
    hundredths of a second: two quick spawns can share one)."""
    before = start_ticks(other.pid)
    assert before is not None
    for _ in range(100):
        proc = spawn()
        if (start_ticks(proc.pid) or 0) > before:
            return proc
        proc.kill()
        proc.wait()
    raise AssertionError("no process started in a later clock tick")


def old_worker(data_dir: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", OLD_WORKER, str(data_dir)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )


class Old:
    """A worker asked to stop: answers successors_warming() on request."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def successors_warming(self) -> bool:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("?\n")
        self.proc.stdin.flush()
        answer = self.proc.stdout.readline().strip()
        assert answer in ("True", "False"), answer
        return answer == "True"


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[Any]]]:
    started: list[subprocess.Popen[Any]] = []
    yield started
    for p in started:
        p.kill()
        p.wait()


def test_an_old_worker_waits_only_for_a_younger_sibling_that_is_not_ready(
    tmp_path: Path, procs: list[subprocess.Popen[Any]]
) -> None:
    marks = ReadyMarks(tmp_path)
    older = sibling()
    procs.append(older)
    old = Old(started_after(older, lambda: old_worker(tmp_path)))
    procs.append(old.proc)
    assert old.successors_warming() is False  # an older sibling, not ready, is no replacement

    young = started_after(old.proc, sibling)
    procs.append(young)
    assert old.successors_warming() is True  # the replacement is warming

    marks.dir.mkdir(parents=True, exist_ok=True)
    marks.path(young.pid).write_text(f"accepting {start_ticks(young.pid)}")
    assert old.successors_warming() is False  # the replacement accepts

    marks.path(young.pid).write_text(f"accepting {(start_ticks(young.pid) or 0) + 1}")
    assert old.successors_warming() is True  # a mark left by an earlier process with that pid

    young.communicate(b"")  # the replacement died while warming: nothing to wait for
    assert old.successors_warming() is False
