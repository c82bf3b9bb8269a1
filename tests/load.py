"""A bounded background load for tests: client threads with keep-alive connections to 127.0.0.1."""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx


@dataclass
class Result:
    sent_at: float
    done_at: float
    status: int | None
    body: bytes
    error: str | None = None


@dataclass
class Load:
    url: str
    path: str
    clients: int = 4
    max_seconds: float = 120.0  # a hard stop, whatever happens
    max_requests: int = 200_000
    results: list[Result] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def _run(self) -> None:
        deadline = time.monotonic() + self.max_seconds
        with httpx.Client(base_url=self.url, timeout=30) as c:
            while not self._stop.is_set() and time.monotonic() < deadline and len(self.results) < self.max_requests:
                sent = time.monotonic()
                try:
                    r = c.post(self.path, content=b"{}")
                    self.results.append(Result(sent, time.monotonic(), r.status_code, r.content))
                except httpx.HTTPError as e:
                    self.results.append(Result(sent, time.monotonic(), None, b"", f"{type(e).__name__}: {e}"))

    def __enter__(self) -> Load:
        for _ in range(self.clients):
            t = threading.Thread(target=self._run, daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)

    def wait_for(self, n: int, timeout: float = 60) -> None:
        """Until n more results have arrived (so the load is really flowing)."""
        target = len(self.results) + n
        deadline = time.monotonic() + timeout
        while len(self.results) < target:
            if time.monotonic() > deadline:
                raise TimeoutError(f"load stalled at {len(self.results)} results")
            time.sleep(0.01)

    def failures(self) -> list[Result]:
        return [r for r in self.results if r.status is None or not 200 <= r.status < 300]

    def summary(self) -> str:
        return (
            f"{len(self.results)} requests, statuses {Counter(r.status for r in self.results)}, "
            f"errors {Counter(r.error for r in self.results if r.error)}"
        )
