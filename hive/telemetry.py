"""Per-invocation telemetry: Prometheus metrics and the JSON function log."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from hive.logs import FunctionLog, now_iso
from hive.metrics import metrics

log = logging.getLogger("hive.invocations")


class Telemetry:
    def __init__(self, function_log: FunctionLog | None) -> None:
        self.log = function_log
        self.m = metrics()
        self.pid = os.getpid()
        self._children: dict[tuple[str, int], tuple[Any, Any]] = {}

    def invocation(self, function: str, version: int, status: int, started_ns: int, request_id: str,
                   error: str | None = None, fuel: int | None = None) -> None:
        elapsed_ns = time.perf_counter_ns() - started_ns
        key = (function, status)
        children = self._children.get(key)
        if children is None:  # labels() lookups are slow: cache the children per (function, status)
            children = self._children[key] = (self.m.invocations.labels(function, str(status)),
                                              self.m.duration.labels(function))
        children[0].inc()
        children[1].observe(elapsed_ns / 1e9)
        if error is not None:
            self.m.errors.labels(function, error).inc()
        if fuel is not None:
            self.m.fuel.labels(function).inc(fuel)
        if self.log is not None:
            record = {"ts": now_iso(), "kind": "invocation", "function": function, "version": version,
                      "status": status, "duration_us": elapsed_ns // 1000, "pid": self.pid,
                      "request_id": request_id}
            if error is not None:
                record["error"] = error
            if fuel is not None:
                record["fuel"] = fuel
            self.log.write(record)

    def guest_output(self, function: str, version: int, stream: str, level: int, text: str, request_id: str) -> None:
        if self.log is not None:
            self.log.write({"ts": now_iso(), "kind": "output", "function": function, "version": version,
                            "stream": stream, "level": logging.getLevelName(level).lower(), "text": text,
                            "pid": self.pid, "request_id": request_id})
