"""hive.peers.SyncMarks: the per-worker record of the registry generation it serves, read by a change
that waits until every live worker has loaded it."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from hive.marks import start_ticks
from hive.peers import SyncMarks


def other_process_mark(marks: SyncMarks, generation: int, alive: bool) -> subprocess.Popen[bytes]:
    """A mark written for another process (alive: still running; else exited and reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    ticks = start_ticks(proc.pid)
    assert ticks is not None
    marks.dir.mkdir(parents=True, exist_ok=True)
    marks.path(proc.pid).write_text(f"{generation} {ticks}")
    if not alive:
        proc.communicate(b"")
    return proc


def test_a_worker_behind_is_reported_until_it_publishes(tmp_path: Path) -> None:
    marks = SyncMarks(tmp_path)
    marks.publish(-1)  # booting: behind any change
    assert marks.lagging(0) == [marks.pid]
    marks.publish(7)
    assert marks.lagging(7) == [] and marks.lagging(8) == [marks.pid]
    assert marks.path(marks.pid).read_text().split()[0] == "7"
    marks.remove()
    assert marks.lagging(100) == []


def test_marks_of_other_live_workers_count(tmp_path: Path) -> None:
    marks = SyncMarks(tmp_path)
    marks.publish(5)
    proc = other_process_mark(marks, 3, alive=True)
    try:
        assert marks.lagging(5) == [proc.pid]
        assert marks.lagging(3) == []
    finally:
        proc.communicate(b"")


def test_marks_of_dead_workers_are_dropped(tmp_path: Path) -> None:
    marks = SyncMarks(tmp_path)
    proc = other_process_mark(marks, 1, alive=False)
    assert marks.lagging(5) == []
    assert not marks.path(proc.pid).exists()


def test_a_reused_pid_is_not_a_worker(tmp_path: Path) -> None:
    # Our own pid with start ticks that are not ours: a worker that died and whose pid was reused.
    marks = SyncMarks(tmp_path)
    marks.dir.mkdir(parents=True)
    ticks = start_ticks(marks.pid)
    assert ticks is not None
    marks.path(marks.pid).write_text(f"0 {ticks + 1}")
    assert marks.lagging(5) == []
    assert not marks.path(marks.pid).exists()


def test_wait_returns_when_every_worker_caught_up_or_after_the_timeout(tmp_path: Path) -> None:
    marks = SyncMarks(tmp_path)
    marks.publish(1)

    async def catch_up_later() -> list[int]:
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, marks.publish, 2)
        return await marks.wait(2, timeout_s=30)

    assert asyncio.run(catch_up_later()) == []
    assert asyncio.run(marks.wait(3, timeout_s=0.05)) == [marks.pid]  # never catches up: reported


def test_garbage_in_the_run_dir_is_ignored(tmp_path: Path) -> None:
    marks = SyncMarks(tmp_path)
    marks.publish(4)
    (marks.dir / "sync-notapid").write_text("1 2")
    (marks.dir / "sync-123").write_text("half")
    assert marks.lagging(4) == []
