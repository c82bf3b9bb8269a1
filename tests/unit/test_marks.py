"""hive.marks.MarkFiles: per-worker mark files, atomic, with dead workers' marks removed by readers
(real processes, a real run dir)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from hive.marks import MarkFiles, start_ticks


def child() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)


def test_start_ticks_of_a_live_and_of_a_gone_process() -> None:
    proc = child()
    try:
        ticks = start_ticks(proc.pid)
        assert ticks is not None and ticks >= (start_ticks(os.getpid()) or 0)
        assert start_ticks(proc.pid) == ticks  # the same every time it is asked
    finally:
        proc.communicate(b"")
    assert start_ticks(proc.pid) is None


def test_a_mark_is_named_by_prefix_pid_and_suffix_and_read_back(tmp_path: Path) -> None:
    marks = MarkFiles(tmp_path, "worker-", ".ready")
    assert marks.read(marks.pid) is None
    assert marks.write("accepting")
    assert marks.path(marks.pid) == tmp_path / "run" / f"worker-{os.getpid()}.ready"
    assert marks.read(marks.pid) == "accepting"
    assert marks.live() == {marks.pid: "accepting"}
    assert [p.name for p in marks.dir.iterdir()] == [f"worker-{os.getpid()}.ready"]  # no temporary left
    marks.write("again")
    assert marks.live() == {marks.pid: "again"}
    marks.remove()
    assert marks.live() == {} and marks.read(marks.pid) is None


def test_kinds_do_not_see_each_other(tmp_path: Path) -> None:
    ready = MarkFiles(tmp_path, "worker-", ".ready")
    sync = MarkFiles(tmp_path, "sync-")
    ready.write("accepting")
    sync.write("7")
    assert ready.live() == {ready.pid: "accepting"}
    assert sync.live() == {sync.pid: "7"}


def test_dead_and_reused_pids_are_removed_by_readers(tmp_path: Path) -> None:
    marks = MarkFiles(tmp_path, "worker-", ".ready")
    marks.write("accepting")
    proc = child()
    ticks = start_ticks(proc.pid)
    marks.path(proc.pid).write_text(f"accepting {ticks}")
    assert marks.live() == {marks.pid: "accepting", proc.pid: "accepting"}
    proc.communicate(b"")  # exits and is reaped: its mark is stale
    assert marks.read(proc.pid) is None
    assert not marks.path(proc.pid).exists()
    # Our own pid with start ticks that are not ours: a dead worker whose pid was reused.
    mine = start_ticks(marks.pid)
    assert mine is not None
    marks.path(marks.pid).write_text(f"accepting {mine + 1}")
    assert marks.live() == {}
    assert not marks.path(marks.pid).exists()


def test_what_is_not_a_mark_is_left_alone(tmp_path: Path) -> None:
    marks = MarkFiles(tmp_path, "worker-", ".ready")
    marks.dir.mkdir(parents=True)
    (marks.dir / "worker-x.ready").write_text("accepting 1")
    (marks.dir / "worker-123.ready").write_text("")
    (marks.dir / "worker-124.other").write_text("accepting 1")
    assert marks.live() == {}
    assert sorted(p.name for p in marks.dir.iterdir()) == ["worker-123.ready", "worker-124.other", "worker-x.ready"]


def test_an_unwritable_run_dir_is_reported_not_raised(tmp_path: Path) -> None:
    (tmp_path / "run").write_text("a file where the run dir should be")
    marks = MarkFiles(tmp_path, "sync-")
    assert marks.write("1") is False
    assert marks.live() == {}
