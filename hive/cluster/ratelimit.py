"""Server-wide rate limits across the nodes of a cluster, approximately and without PostgreSQL on the
request path: each node keeps its own buckets (hive.ratelimit, shared by its workers) with its share of
the function's limit, rps / N and burst / N (rounded up), N being the live nodes its replicator last
counted (hive.cluster.replicator's state file, re-read at most once a second).

Tolerance: over any T seconds the cluster admits at most rps x T + N x ceil(burst / N) (each node's bucket
is bounded on its own), and with the load balancer spreading requests evenly it admits about rps x T.
With uneven spreading it admits less (a node that gets every request admits rps / N); while the count of
live nodes changes (a node joins, or dies and its lease has not run out yet) each node may use the old share.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from hive.cluster.replicator import read_state
from hive.ratelimit import RateLimiter

REFRESH_S = 1.0


class SharedRateLimiter(RateLimiter):
    def __init__(self, path: str | Path, data_dir: Path) -> None:
        super().__init__(path)
        self.data_dir = data_dir
        self.nodes = 1
        self._read_at = -math.inf

    def _node_count(self) -> int:
        now = time.monotonic()
        if now - self._read_at >= REFRESH_S:
            self._read_at = now
            state = read_state(self.data_dir)
            self.nodes = max(1, state.live_nodes) if state is not None else 1
        return self.nodes

    def take(self, key: str, rps: float, burst: int) -> float:
        n = self._node_count()
        return super().take(key, rps / n, math.ceil(burst / n))
