"""Per-function fetch limits and the per-invocation budget that counts against them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from hive.outbound.errors import FetchRefused

MiB = 1024 * 1024
MAX_REDIRECTS = 5
MAX_REQUEST_HEADERS = 100
MAX_REQUEST_HEADER_BYTES = 64 * 1024


@dataclass(frozen=True)
class FetchLimits:
    max_requests: int = 50  # per invocation; every redirect hop counts as one
    max_concurrent: int = 6  # per invocation; one more is refused at once, not queued
    connect_timeout_ms: int = 5000  # resolve + TCP connect + TLS handshake, per connection
    timeout_ms: int = 30000  # the whole fetch: every hop, through the last byte of the body
    max_response_bytes: int = 10 * MiB  # the body; reading stops just past it
    max_request_bytes: int = 6 * MiB  # the body


class FetchBudget:
    """One per invocation. Used from the event loop only, so plain counters suffice."""

    def __init__(self) -> None:
        self.requests = 0
        self.in_flight = 0
        self.bytes_out = 0
        self.bytes_in = 0

    def take_request(self, limits: FetchLimits) -> None:
        if self.requests >= limits.max_requests:
            raise FetchRefused(
                "too_many_requests",
                (
                    f"this invocation already made {limits.max_requests} fetch requests (redirect hops count); "
                    "make fewer calls or raise the function's max_requests limit"
                ),
            )
        self.requests += 1

    @contextmanager
    def slot(self, limits: FetchLimits) -> Iterator[None]:
        # Refuse rather than queue: a queue would hold the guest's instance and memory while it waits,
        # and the guest can handle the error value by awaiting one of its fetches first.
        if self.in_flight >= limits.max_concurrent:
            raise FetchRefused(
                "too_many_concurrent",
                (
                    f"this invocation already has {limits.max_concurrent} fetches in flight; wait for one to "
                    "finish or raise the function's max_concurrent limit"
                ),
            )
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
