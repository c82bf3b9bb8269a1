"""The invoke path, independent of the HTTP layer: admit (version, auth, rate limit), then call.

The Starlette route uses it; so can a leaner HTTP front end.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping

from hive import abi
from hive.errors import HiveError, RateLimited
from hive.ratelimit import RateLimiter, retry_after
from hive.runtime import Loaded, Runtime
from hive.telemetry import Telemetry


class Invoker:
    def __init__(self, runtime: Runtime, limiter: RateLimiter, telemetry: Telemetry) -> None:
        self.runtime = runtime
        self.limiter = limiter
        self.telemetry = telemetry

    def admit(self, name: str, headers: Mapping[str, str], request_id: str = "") -> Loaded:
        """The function's current version, once the caller passed its auth and rate limit."""
        rt = self.runtime
        rt.sync()  # one key read; makes a deploy visible to the next request on every worker
        loaded = rt.lookup(name)
        try:
            if not loaded.auth.public:
                loaded.auth.check(headers)
            if loaded.rate is not None:
                wait = self.limiter.take(loaded.name, *loaded.rate)
                if wait:
                    raise RateLimited(f"over the rate limit of {loaded.rate[0]:g} requests per second",
                                      headers={"retry-after": retry_after(wait)})
        except HiveError as e:
            self.rejected(loaded, e, request_id)
            raise
        return loaded

    def rejected(self, loaded: Loaded, e: HiveError, request_id: str = "") -> None:
        """Count a request refused before the guest ran (auth, rate, body size)."""
        self.telemetry.invocation(loaded.name, loaded.record.version, e.status, time.perf_counter_ns(),
                                  request_id, e.code)

    def call(self, loaded: Loaded, method: bytes, raw_path: bytes, query: bytes, headers: abi.Headers,
             body: bytes, request_id: str | None = None) -> abi.Response:
        envelope = abi.encode_request(method, raw_path, query, headers, body)
        request_id = request_id or os.urandom(8).hex()
        started = time.perf_counter_ns()
        rec = loaded.record
        rt = self.runtime
        try:
            resp, fuel = rt.invoke(loaded, envelope, request_id)
        except HiveError as e:
            self.telemetry.invocation(rec.name, rec.version, e.status, started, request_id, e.code,
                                      e.extra.get("fuel_used"))
            if rt.needs_refill:
                asyncio.get_running_loop().call_soon(rt.refill)  # off the request path
            raise
        self.telemetry.invocation(rec.name, rec.version, resp.status, started, request_id, None, fuel)
        if fuel is not None:  # the host's figure, never one the guest made up
            resp.headers = [h for h in resp.headers if h[0] != b"x-hive-fuel-used"]
            resp.headers.append((b"x-hive-fuel-used", str(fuel).encode()))
        return resp
