"""psutil watchdog: a worker over its RSS or sustained-CPU ceiling recycles itself gracefully."""

from __future__ import annotations

import asyncio
import collections
import logging
import os
import time
from collections.abc import Callable

import psutil

log = logging.getLogger("hive.watchdog")


class Watchdog:
    def __init__(
        self,
        *,
        max_rss_mb: int,
        max_cpu_percent: float,
        cpu_window_s: float,
        interval_s: float,
        on_trip: Callable[[str], None],
    ) -> None:
        self.max_rss = max_rss_mb << 20
        self.max_cpu = max_cpu_percent
        self.window = cpu_window_s
        self.interval = interval_s
        self.on_trip = on_trip
        self.proc = psutil.Process(os.getpid())
        self._samples: collections.deque[tuple[float, float]] = collections.deque()

    def check(self) -> str | None:
        """The reason to recycle, with the figures, or None."""
        if self.max_rss:
            rss = self.proc.memory_info().rss
            if rss > self.max_rss:
                return f"RSS {rss / 2**20:.1f} MiB is over the ceiling of {self.max_rss >> 20} MiB"
        if self.max_cpu:
            now = time.monotonic()
            t = self.proc.cpu_times()
            self._samples.append((now, t.user + t.system))
            # Keep the newest sample that is at least a window old, so the measured span covers the
            # whole window even when samples are further apart than the window.
            while len(self._samples) > 1 and now - self._samples[1][0] >= self.window:
                self._samples.popleft()
            first_t, first_cpu = self._samples[0]
            span = now - first_t
            if span >= self.window * 0.9:
                pct = 100 * (self._samples[-1][1] - first_cpu) / span
                if pct > self.max_cpu:
                    return f"CPU {pct:.0f}% sustained over {span:.0f} s is over the ceiling of {self.max_cpu:.0f}%"
        return None

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                reason = self.check()
            except psutil.Error:
                continue
            if reason:
                log.warning("worker %d recycling: %s", os.getpid(), reason)
                self.on_trip(reason)
                return
