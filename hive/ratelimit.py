"""Server-wide token buckets, shared by every worker through a small LMDB environment.

Each take is one short write transaction (no fsync: the buckets are not worth persisting), so
the count holds across workers however the kernel spreads connections.
"""

from __future__ import annotations

import math
import struct
import time
from pathlib import Path

import lmdb

from hive.lmdbfiles import check_not_truncated

_BUCKET = struct.Struct("<dd")  # tokens, last refill (CLOCK_MONOTONIC, the same in every process)


class RateLimiter:
    def __init__(self, path: str | Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        self.env = lmdb.open(
            str(path),
            map_size=64 << 20,
            subdir=True,
            sync=False,
            metasync=False,
            max_readers=512,
            readahead=False,
            mode=0o600,
        )
        check_not_truncated(self.env, Path(path), "the rate-limit store")

    def close(self) -> None:
        self.env.close()

    def take(self, key: str, rps: float, burst: int) -> float:
        """0.0 when a request may pass, else the seconds until one token is back."""
        k = key.encode()
        with self.env.begin(write=True) as txn:
            now = time.monotonic()
            raw = txn.get(k)
            tokens, last = _BUCKET.unpack(raw) if raw else (float(burst), now)
            tokens = min(float(burst), tokens + (now - last) * rps)
            if tokens >= 1.0:
                txn.put(k, _BUCKET.pack(tokens - 1.0, now))
                return 0.0
            txn.put(k, _BUCKET.pack(tokens, now))
            return (1.0 - tokens) / rps


def retry_after(wait_s: float) -> str:
    return str(max(1, math.ceil(wait_s)))
