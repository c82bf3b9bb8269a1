"""Per-invocation telemetry: Prometheus metrics and the JSON function log."""

from __future__ import annotations

import asyncio
import bisect
import importlib.metadata
import logging
import os
import threading
import time
from typing import Any

import msgspec
from prometheus_client import values as _prometheus_values

from hive.logs import FunctionLog, now_iso
from hive.metrics import metrics

_running_loop = asyncio._get_running_loop  # the C function behind get_running_loop, without its raise

log = logging.getLogger("hive.invocations")

# In multiprocess mode (under gunicorn) every metric update asks os.getpid() whether the process
# forked since the last one: a syscall, three per invocation. The documented process_identifier of
# prometheus_client's MultiProcessValue can be any function that gives distinct values in processes
# that run at the same time; this one is the pid, refreshed after each fork. Replacing the module's
# ValueClass is the private part: install() does it only on the prometheus-client versions tested.
# The minor releases pyproject.toml allows (prometheus-client>=0.20,<0.27); 0.26.0 is the one the
# test suite runs here.
PROMETHEUS_TESTED = ((0, 20), (0, 26))
_patch_log = logging.getLogger("hive.telemetry")
_pid = os.getpid()


def _after_fork() -> None:
    global _pid
    _pid = os.getpid()


def _process_identifier() -> int:
    return _pid


def _version(text: str) -> tuple[int, int] | None:
    try:
        major, minor = text.split(".")[:2]
        return int(major), int(minor)
    except ValueError:
        return None


def install() -> bool:
    """Metric values that read a cached pid instead of calling os.getpid() on every update. Call it in
    a worker after fork, before the first metric exists: two value classes must never share one
    process's mmap files. Only in multiprocess mode and on a tested prometheus-client; otherwise the
    library's own value class stays (with a warning when it could have been replaced). Whether installed."""
    global _pid
    value_class = _prometheus_values.ValueClass
    if getattr(value_class, "_hive_cached_pid", False):
        return True
    if value_class is _prometheus_values.MutexValue:  # one process, no mmap files: nothing to save
        return False
    version = importlib.metadata.version("prometheus-client")
    low, high = PROMETHEUS_TESTED
    tested = low <= (_version(version) or (-1, -1)) <= high
    if not tested or not callable(getattr(_prometheus_values, "MultiProcessValue", None)):
        _patch_log.warning(
            "metrics keep prometheus-client's own value class: %s is not in the tested range %d.%d-%d.%d",
            version,
            *low,
            *high,
        )
        return False
    if metrics.cache_info().currsize:
        _patch_log.warning("metrics keep prometheus-client's own value class: metrics already exist")
        return False
    _pid = os.getpid()
    os.register_at_fork(after_in_child=_after_fork)
    _prometheus_values.ValueClass = _prometheus_values.MultiProcessValue(_process_identifier)
    _prometheus_values.ValueClass._hive_cached_pid = True
    return True


_second = -1
_second_text = ""
_second_bytes = b""
_json = msgspec.json.Encoder().encode
# An invocation record without error or fuel, formatted directly: the same JSON, key for key, as
# FunctionLog.line gives for its dict (tests/unit/test_telemetry.py compares the two).
_INVOCATION_LINE = (
    b'{"ts":"%s","kind":"invocation","function":%s,"version":%d,"status":%d,"duration_us":%d,'
    b'"pid":%d,"request_id":%s}\n'
)


def _now_iso() -> str:
    """hive.logs.now_iso, with the formatted second cached (the same text, a quarter of the time)."""
    return _now_iso_bytes().decode()


def _now_iso_bytes() -> bytes:
    global _second, _second_text, _second_bytes
    t = time.time()
    s = int(t)
    if s != _second:
        _second_text, _second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)), s
        _second_bytes = _second_text.encode()
    return b"%s.%03dZ" % (_second_bytes, int(t % 1 * 1000))


class _Series:
    """The metric children of one (function, status). On the event loop `add` only counts, and
    `flush` (once per loop turn, with the batched log lines) writes the counts to the multiprocess
    files; `record` writes at once (guest threads). Both update the values the way Counter.inc and
    Histogram.observe do, without their per-call checks (the children are complete by
    construction), with the histogram bucket found by bisection."""

    __slots__ = (
        "count",
        "duration",
        "count_value",
        "sum_value",
        "bucket_values",
        "bounds",
        "function_json",
        "n",
        "total",
        "hits",
    )

    def __init__(self, count: Any, duration: Any, function: str) -> None:
        self.count, self.duration = count, duration
        self.function_json = _json(function)
        try:
            self.count_value = count._value
            self.sum_value = duration._sum
            self.bucket_values = duration._buckets
            self.bounds = list(duration._upper_bounds)
        except AttributeError:  # pragma: no cover - another prometheus_client: the public API
            self.count_value = None
            self.bounds = []
        self.n = 0  # counted by add() since the last flush
        self.total = 0.0
        self.hits = [0] * len(self.bounds)

    def add(self, seconds: float) -> bool:
        """Count one call; True when it is the first since the last flush."""
        self.n += 1
        self.total += seconds
        i = bisect.bisect_left(self.bounds, seconds)  # the first bucket with seconds <= bound
        if i < len(self.hits):
            self.hits[i] += 1
        return self.n == 1

    def flush(self) -> None:
        n, total, hits = self.n, self.total, self.hits
        self.n, self.total, self.hits = 0, 0.0, [0] * len(hits)
        if self.count_value is None:  # pragma: no cover
            for _ in range(n):
                self.count.inc()
                self.duration.observe(total / n)
            return
        self.count_value.inc(n)
        self.sum_value.inc(total)
        for value, hit in zip(self.bucket_values, hits, strict=True):
            if hit:
                value.inc(hit)

    def record(self, seconds: float) -> None:
        if self.count_value is None:  # pragma: no cover
            self.count.inc()
            self.duration.observe(seconds)
            return
        self.count_value.inc(1)
        self.sum_value.inc(seconds)
        i = bisect.bisect_left(self.bounds, seconds)
        if i < len(self.bounds):
            self.bucket_values[i].inc(1)


class Telemetry:
    def __init__(self, function_log: FunctionLog | None) -> None:
        self.log = function_log
        self.m = metrics()
        self.pid = os.getpid()
        self._children: dict[tuple[str, int], _Series] = {}
        # Guest calls may run in threads (hive.invoke): FunctionLog's write and its occasional
        # reopen (rotation) must not interleave.
        self._log_lock = threading.Lock()
        # Lines written on the event loop wait in _batch until the loop's next turn, which writes them
        # in one write(): under load one syscall carries many requests' lines, and a line is on disk
        # before the loop reads the next request (a client that got its answer and asks for the logs
        # finds it). Guest threads write their own lines at once. Metrics go the same way: counted
        # on the loop, written to the multiprocess files in the same flush (_dirty: the series
        # counted since the last one).
        self._batch: list[bytes] = []
        self._dirty: list[_Series] = []
        self._flush_due = False
        self.lost = 0  # records that could not be written
        self._lost_logged = -1e9

    def series(self, function: str, status: int) -> _Series:
        """The metric children of (function, status), created once (labels() lookups are slow)."""
        key = (function, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = _Series(
                self.m.invocations.labels(function, str(status)), self.m.duration.labels(function), function
            )
        return children

    def warm_up(self) -> None:
        """Run the log-record code once without writing (its first run costs about 70 µs)."""
        now_iso()
        FunctionLog.line(
            {
                "ts": _now_iso(),
                "kind": "invocation",
                "function": "warm-up",
                "version": 0,
                "status": 200,
                "duration_us": 0,
                "pid": self.pid,
                "request_id": "",
            }
        )

    def _lost(self, e: OSError) -> None:
        """Telemetry could not be written (a read-only or full data dir): the request is served all the
        same; say so at most once a minute."""
        self.lost += 1
        now = time.monotonic()
        if now - self._lost_logged > 60:
            self._lost_logged = now
            log.error(
                "could not write metrics or the function log (%s); serving without them, %d records lost "
                "so far: make the data dir writable",
                e,
                self.lost,
            )

    def invocation(
        self,
        function: str,
        version: int,
        status: int,
        started_ns: int,
        request_id: str,
        error: str | None = None,
        fuel: int | None = None,
    ) -> None:
        try:
            elapsed_ns = time.perf_counter_ns() - started_ns
            children = self._children.get((function, status)) or self.series(function, status)
            loop = _running_loop()
            if loop is None:  # a guest thread (or no loop): at once
                children.record(elapsed_ns / 1e9)
            else:
                if children.add(elapsed_ns / 1e9):
                    self._dirty.append(children)
                if not self._flush_due:
                    self._flush_due = True
                    loop.call_soon(self.flush)
            if error is not None:
                self.m.errors.labels(function, error).inc()
            if fuel is not None:
                self.m.fuel.labels(function).inc(fuel)
            if self.log is None:
                return
            if error is None and fuel is None and loop is not None:
                self._batch.append(
                    _INVOCATION_LINE
                    % (
                        _now_iso_bytes(),
                        children.function_json,
                        version,
                        status,
                        elapsed_ns // 1000,
                        self.pid,
                        _json(request_id),
                    )
                )
                return
            record = {
                "ts": _now_iso(),
                "kind": "invocation",
                "function": function,
                "version": version,
                "status": status,
                "duration_us": elapsed_ns // 1000,
                "pid": self.pid,
                "request_id": request_id,
            }
            if error is not None:
                record["error"] = error
            if fuel is not None:
                record["fuel"] = fuel
            self._write(self.log, record)
        except OSError as e:  # a read-only or full data dir: the request is served all the same
            self._lost(e)

    def outbound(self, function: str, version: int, request_id: str, r: Any) -> None:
        """One outbound fetch hop or refusal (a hive.outbound.FetchRecord)."""
        try:
            status = str(r.status) if r.status is not None else (r.code or "error")
            self.m.outbound.labels(function, r.host or "-", status).inc()
            self.m.outbound_duration.labels(function).observe(r.ms / 1000)
            if self.log is not None:
                record = {
                    "ts": now_iso(),
                    "kind": "outbound",
                    "function": function,
                    "version": version,
                    "method": r.method,
                    "host": r.host,
                    "status": r.status,
                    "ms": round(r.ms, 2),
                    "bytes_out": r.bytes_out,
                    "bytes_in": r.bytes_in,
                    "pid": self.pid,
                    "request_id": request_id,
                }
                if r.code is not None:
                    record["error"] = r.code
                self._write(self.log, record)
        except OSError as e:
            self._lost(e)

    def guest_output(self, function: str, version: int, stream: str, level: int, text: str, request_id: str) -> None:
        if self.log is not None:
            try:
                self._write(
                    self.log,
                    {
                        "ts": now_iso(),
                        "kind": "output",
                        "function": function,
                        "version": version,
                        "stream": stream,
                        "level": logging.getLevelName(level).lower(),
                        "text": text,
                        "pid": self.pid,
                        "request_id": request_id,
                    },
                )
            except OSError as e:
                self._lost(e)

    def _write(self, log: FunctionLog, record: dict[str, Any]) -> None:
        loop = _running_loop()
        if loop is None:  # a guest thread (or no loop): at once
            with self._log_lock:
                log.write(record)
            return
        self._batch.append(FunctionLog.line(record))
        if not self._flush_due:
            self._flush_due = True
            loop.call_soon(self.flush)

    def flush(self) -> None:
        """Write what was counted and batched on the event loop (also called on shutdown)."""
        self._flush_due = False
        dirty, self._dirty = self._dirty, []
        try:
            for series in dirty:
                series.flush()
        except OSError as e:  # pragma: no cover - the mmap files are written in memory
            self._lost(e)
        batch, self._batch = self._batch, []
        if batch and self.log is not None:
            try:
                with self._log_lock:
                    self.log.write_lines(b"".join(batch), len(batch))
            except OSError as e:
                self.lost += len(batch) - 1
                self._lost(e)
