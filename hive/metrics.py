"""Prometheus metrics, aggregated across gunicorn workers with prometheus-client's multiprocess mode.

Under gunicorn, PROMETHEUS_MULTIPROC_DIR is set by the master before the workers import this
module; in a single process (tests, TestClient) the default in-memory registry is used.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import multiprocess as _mp
from prometheus_client import values as _values

BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
CONTENT_TYPE = CONTENT_TYPE_LATEST


@dataclass(frozen=True)
class Metrics:
    invocations: Counter
    errors: Counter
    duration: Histogram
    fuel: Counter
    deploys: Counter
    warm: Gauge
    rss: Gauge
    admin_token_stripped: Counter
    outbound: Counter
    outbound_duration: Histogram


@lru_cache(maxsize=1)
def metrics() -> Metrics:
    try:
        return _metrics(REGISTRY)
    except OSError as e:
        # The multiprocess files cannot be made (a read-only or broken data dir): count in this
        # process's memory instead, so that requests are served; /metrics then shows nothing of it.
        logging.getLogger("hive.metrics").error(
            "cannot write metrics to %s (%s): serving without them; make the data dir writable",
            os.environ.get("PROMETHEUS_MULTIPROC_DIR"),
            e,
        )
        _values.ValueClass = _values.MutexValue
        return _metrics(CollectorRegistry())


def _metrics(registry: CollectorRegistry) -> Metrics:
    def counter(name: str, doc: str, labels: list[str] | None = None) -> Counter:
        return Counter(name, doc, labels or (), registry=registry)

    def gauge(name: str, doc: str, labels: list[str] | None = None, *, multiprocess_mode: str) -> Gauge:
        return Gauge(name, doc, labels or (), registry=registry, multiprocess_mode=multiprocess_mode)  # type: ignore[arg-type]  # a Literal in the stubs

    def histogram(name: str, doc: str, labels: list[str], *, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, doc, labels, registry=registry, buckets=buckets)

    return Metrics(
        invocations=counter("hive_invocations", "Invocations by function and HTTP status", ["function", "status"]),
        errors=counter("hive_errors", "Failed invocations by function and error code", ["function", "code"]),
        duration=histogram(
            "hive_invocation_duration_seconds",
            "Time in the host and the guest per invocation",
            ["function"],
            buckets=BUCKETS,
        ),
        fuel=counter("hive_fuel_consumed", "Fuel the guests consumed, for functions with a fuel budget", ["function"]),
        deploys=counter("hive_deploys", "Deploys and rollbacks by function", ["function", "kind"]),
        warm=gauge("hive_warm_instances", "Warm guest instances", multiprocess_mode="livesum"),
        rss=gauge("hive_worker_rss_bytes", "Resident memory of each worker", ["worker"], multiprocess_mode="liveall"),
        outbound=counter(
            "hive_outbound_requests",
            "Outbound fetch requests by function, host and status (the refusal code when there was no response)",
            ["function", "host", "status"],
        ),
        outbound_duration=histogram(
            "hive_outbound_duration_seconds", "Time of each outbound fetch hop", ["function"], buckets=BUCKETS
        ),
        admin_token_stripped=counter(
            "hive_admin_token_stripped",
            "Invoke requests whose Authorization header carried the admin token, removed before the guest saw it",
            ["function"],
        ),
    )


def _registry() -> CollectorRegistry:
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return REGISTRY
    registry = CollectorRegistry()
    _mp.MultiProcessCollector(registry)
    return registry


def exposition() -> bytes:
    metrics()
    return generate_latest(_registry())


def mark_process_dead(pid: int) -> None:
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        _mp.mark_process_dead(pid)


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Linear interpolation inside the histogram bucket holding quantile q (cumulative counts)."""
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return prev_le
            span = count - prev_count
            return prev_le + (le - prev_le) * ((rank - prev_count) / span if span else 1.0)
        prev_le, prev_count = le, count
    return prev_le


def function_stats() -> dict[str, dict[str, Any]]:
    """Per function: invocations, errors, p50/p99 latency in ms, across every worker."""
    metrics()
    stats: dict[str, dict[str, Any]] = {}
    buckets: dict[str, dict[float, float]] = {}

    def entry(name: str) -> dict[str, Any]:
        return stats.setdefault(name, {"invocations": 0, "errors": 0, "p50_ms": None, "p99_ms": None})

    for family in _registry().collect():
        for s in family.samples:
            fn = s.labels.get("function")
            if fn is None:
                continue
            if s.name == "hive_invocations_total":
                entry(fn)["invocations"] += int(s.value)
            elif s.name == "hive_errors_total":
                entry(fn)["errors"] += int(s.value)
            elif s.name == "hive_invocation_duration_seconds_bucket":
                le = float(s.labels["le"])
                b = buckets.setdefault(fn, {})
                b[le] = b.get(le, 0) + s.value
    for fn, b in buckets.items():
        cumulative = sorted(b.items())
        for key, q in (("p50_ms", 0.5), ("p99_ms", 0.99)):
            v = _quantile(cumulative, q)
            entry(fn)[key] = None if v is None else round(v * 1000, 3)
    return stats
