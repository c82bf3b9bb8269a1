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
import json
import time
from pathlib import Path

from hive.marks import MarkFiles


class SyncMarks(MarkFiles):
    def __init__(self, data_dir: Path) -> None:
        super().__init__(data_dir, "sync-")

    def publish(self, generation: int, failed: dict[str, str] | None = None) -> None:
        """The generation served, and the functions that could not be loaded here (name -> why)."""
        # A read-only or vanished data dir: changes then answer after sync_wait_ms.
        self.write(str(generation) + (" " + json.dumps(failed, separators=(",", ":")) if failed else ""))

    @staticmethod
    def _parse(value: str) -> tuple[int, dict[str, str]] | None:
        gen, _, failed = value.partition(" ")
        try:
            return int(gen), (json.loads(failed) if failed else {})
        except ValueError:
            return None  # not a mark of ours

    def lagging(self, generation: int) -> list[int]:
        """The live workers whose mark is below `generation`. Marks of dead workers are removed."""
        return [
            pid
            for pid, value in self.live().items()
            if (mark := self._parse(value)) is not None and mark[0] < generation
        ]

    def failures(self, generation: int) -> list[dict[str, object]]:
        """What the workers at `generation` or later could not load: [{pid, function, error}]."""
        out: list[dict[str, object]] = []
        for pid, value in sorted(self.live().items()):
            mark = self._parse(value)
            if mark is not None and mark[0] >= generation:
                out += [{"pid": pid, "function": name, "error": why} for name, why in sorted(mark[1].items())]
        return out

    async def wait(self, generation: int, timeout_s: float) -> list[int]:
        """Until every live worker serves `generation`; the ones still behind after timeout_s."""
        deadline = time.monotonic() + timeout_s
        while True:
            behind = self.lagging(generation)
            if not behind or time.monotonic() >= deadline:
                return behind
            await asyncio.sleep(0.002)
