"""Per-worker mark files in `<data dir>/run`: one small file per worker and kind of mark.

A mark is `<prefix><pid><suffix>` holding "<value> <start ticks>": the start ticks (when the process
started, in clock ticks since boot, from psutil) tell a live worker from a dead one whose pid was
reused. A mark is written to a temporary file and renamed over the old one, so a reader never sees
half of it.
Readers remove the marks of workers that are gone (kill -9 leaves them behind).

The uses are thin layers on `MarkFiles`: hive.peers.SyncMarks (the registry generation a worker
serves) and workers.worker.ReadyMarks (a worker accepts connections).
No wasmtime or LMDB here: gunicorn's master imports this module through the worker class.
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

_CLK_TCK = os.sysconf("SC_CLK_TCK")


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot), or None when it is gone.

    psutil's create_time() is the kernel's start time plus the boot time as the wall clock sees it
    now, and that moves with clock steps and NTP corrections: minus boot_time(), read the same way,
    it is the start again, the same for the life of the process. Only a clock step between the two
    reads could tell otherwise, so they are taken again when boot_time() changed meanwhile."""
    try:
        for _ in range(3):
            boot = psutil.boot_time()
            created = psutil.Process(pid).create_time()
            if psutil.boot_time() == boot:
                return round((created - boot) * _CLK_TCK)
    except psutil.Error:  # gone (or not ours to look at)
        return None
    return None  # the clock kept stepping: unknown, as if gone


class MarkFiles:
    """One kind of mark: `<data dir>/run/<prefix><pid><suffix>`, one per worker."""

    def __init__(self, data_dir: Path, prefix: str, suffix: str = "") -> None:
        self.dir = data_dir / "run"
        self.prefix = prefix
        self.suffix = suffix
        self.pid = os.getpid()
        self._ticks: int | None = None

    def path(self, pid: int) -> Path:
        return self.dir / f"{self.prefix}{pid}{self.suffix}"

    def write(self, value: str) -> bool:
        """This process's mark, atomically; False when the run dir cannot be written."""
        pid = os.getpid()
        if pid != self.pid or self._ticks is None:  # first use, or a fork
            self.pid, self._ticks = pid, start_ticks(pid)
        tmp = self.dir / f".{self.prefix}{pid}{self.suffix}.tmp"  # never matched by the marks' glob
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(f"{value} {self._ticks}")
            os.replace(tmp, self.path(pid))  # readers never see a half-written mark
        except OSError:
            return False
        return True

    def remove(self) -> None:
        self.path(self.pid).unlink(missing_ok=True)

    def read(self, pid: int) -> str | None:
        """The value of `pid`'s mark while that process lives (a dead one's mark is removed)."""
        return self._check(self.path(pid), pid)

    def live(self) -> dict[int, str]:
        """pid -> value of every live worker's mark. The marks of dead workers are removed."""
        try:
            marks = list(self.dir.glob(f"{self.prefix}*{self.suffix}"))
        except OSError:
            return {}
        out = {}
        for mark in marks:
            pid = self._pid_of(mark.name)
            if pid is not None and (value := self._check(mark, pid)) is not None:
                out[pid] = value
        return out

    def _pid_of(self, name: str) -> int | None:
        digits = name[len(self.prefix) : len(name) - len(self.suffix)]
        return int(digits) if digits.isdigit() else None  # anything else in the run dir is not a mark

    def _check(self, mark: Path, pid: int) -> str | None:
        try:
            value, ticks = mark.read_text().rsplit(" ", 1)
            recorded = int(ticks)
        except (OSError, ValueError):
            return None  # absent, replaced or removed while we looked, or not a mark
        if start_ticks(pid) != recorded:  # gone, or its pid now belongs to another process
            mark.unlink(missing_ok=True)
            return None
        return value
