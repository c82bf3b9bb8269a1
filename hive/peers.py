"""Which registry generation each worker serves, so that a change answers only once it is live.

Every worker keeps `<data dir>/run/sync-<pid>` up to date: "<generation> <process start ticks>".
A deploy, rollback or delete waits (bounded) until every live worker's mark reaches the generation
of the change, so the next request, whichever worker takes it, is served warm by the new version
instead of loading it. A booting worker marks -1 before its first sync: a change made while it warms
waits for it too. The start ticks tell a live worker from a dead one whose pid was reused.
No wasmtime or LMDB here: gunicorn's master imports this module through the worker class.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path


def start_ticks(pid: int) -> int | None:
    """When the process started (clock ticks since boot), or None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None


class SyncMarks:
    def __init__(self, data_dir: Path) -> None:
        self.dir = data_dir / "run"
        self.pid = os.getpid()
        self._ticks: int | None = None

    def path(self, pid: int) -> Path:
        return self.dir / f"sync-{pid}"

    def publish(self, generation: int) -> None:
        pid = os.getpid()
        if pid != self.pid or self._ticks is None:  # first use, or a fork
            self.pid, self._ticks = pid, start_ticks(pid)
        tmp = self.dir / f".sync-{pid}.tmp"
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            tmp.write_text(f"{generation} {self._ticks}")
            os.replace(tmp, self.path(pid))  # readers never see a half-written mark
        except OSError:
            pass  # a read-only or vanished data dir: changes then answer after sync_wait_ms

    def remove(self) -> None:
        self.path(self.pid).unlink(missing_ok=True)

    def lagging(self, generation: int) -> list[int]:
        """The live workers whose mark is below `generation`. Marks of dead workers are removed."""
        behind = []
        try:
            marks = list(self.dir.glob("sync-*"))
        except OSError:
            return []
        for mark in marks:
            try:
                pid = int(mark.name[5:])
                gen, ticks = (int(x) for x in mark.read_text().split())
            except (OSError, ValueError):
                continue  # replaced or removed while we looked
            if start_ticks(pid) != ticks:
                mark.unlink(missing_ok=True)
            elif gen < generation:
                behind.append(pid)
        return behind

    async def wait(self, generation: int, timeout_s: float) -> list[int]:
        """Until every live worker serves `generation`; the ones still behind after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            behind = self.lagging(generation)
            if not behind or time.monotonic() >= deadline:
                return behind
            await asyncio.sleep(0.002)
