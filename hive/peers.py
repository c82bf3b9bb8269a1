"""Which registry generation each worker serves, so that a change answers only once it is live.

Every worker keeps its sync mark (hive.marks: `<data dir>/run/sync-<pid>`, "<generation> <start
ticks>") up to date. A deploy, rollback or delete waits (bounded) until every live worker's mark
reaches the generation of the change, so the next request, whichever worker takes it, is served warm
by the new version instead of loading it. A booting worker marks -1 before its first sync: a change
made while it warms waits for it too.
No wasmtime or LMDB here: gunicorn's master imports this module through the worker class.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from hive.marks import MarkFiles


class SyncMarks(MarkFiles):
    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, "sync-")

    def publish(self, generation: int) -> None:
        # A read-only or vanished data dir: changes then answer after sync_wait_ms.
        self.write(str(generation))

    def lagging(self, generation: int) -> list[int]:
        """The live workers whose mark is below `generation`. Marks of dead workers are removed."""
        behind = []
        for pid, value in self.live().items():
            try:
                if int(value) < generation:
                    behind.append(pid)
            except ValueError:
                continue  # not a generation: not a mark of ours
        return behind

    async def wait(self, generation: int, timeout_s: float) -> list[int]:
        """Until every live worker serves `generation`; the ones still behind after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            behind = self.lagging(generation)
            if not behind or time.monotonic() >= deadline:
                return behind
            await asyncio.sleep(0.002)
