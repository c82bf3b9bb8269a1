"""Server settings, each declared once as data.

Sources, lowest first: defaults, the TOML file named by HIVE_CONFIG (or conf/hive.toml beside the
package when run from a checkout), HIVE_* environment variables, explicit overrides (CLI flags).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

MiB = 1024 * 1024


@dataclass(frozen=True)
class Setting:
    name: str
    kind: Callable[[Any], Any]
    default: Any
    help: str
    cli: str | None = None  # the `edge-hive serve` flag, generated from this entry (as gunicorn does)

    @property
    def env(self) -> str:
        return "HIVE_" + self.name.upper()


def _bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    return str(v).strip().lower() in {"1", "true", "yes", "on"}


def _optional_str(v: Any) -> str | None:
    return None if v in (None, "") else str(v)


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", str, "./.hive", "registry, compiled artifacts and the admin token live here", cli="--data-dir"),
    Setting("bind", str, "127.0.0.1:8443", "HOST:PORT the server listens on", cli="--bind"),
    Setting("workers", int, 2, "number of worker processes", cli="--workers"),
    Setting(
        "admin_token", _optional_str, None, "bearer token for admin routes; generated into the data dir when unset"
    ),
    Setting("max_upload_bytes", int, 50 * MiB, "largest module upload"),
    Setting("max_request_bytes", int, 6 * MiB, "default largest request body"),
    Setting("max_response_bytes", int, 6 * MiB, "default largest response body"),
    Setting("max_header_bytes", int, 64 * 1024, "largest total size of request headers"),
    Setting("max_headers", int, 100, "most request header fields"),
    Setting("max_url_bytes", int, 8 * 1024, "longest request URL (path and query); longer ones get 414"),
    Setting("body_timeout_s", float, 30.0, "how long a client may take to send a whole request body"),
    Setting("timeout_ms", int, 100, "default guest execution time limit per invocation (waits on I/O excluded)"),
    Setting("wall_timeout_ms", int, 30_000, "default limit on a whole invocation, waits on I/O included"),
    Setting("max_concurrency", int, 64, "default invocations in flight per function and worker (functions with I/O)"),
    Setting("max_queue", int, 64, "default invocations waiting for a slot per function and worker, then 503"),
    Setting("io_threads", int, 256, "guest threads per worker for functions that wait on fetch or KV"),
    Setting("outbound_ca_file", _optional_str, None, "extra CA certificates (PEM) that outbound fetch trusts"),
    Setting("kv_map_size_mb", int, 4096, "LMDB map size of the KV stores (sparse)"),
    Setting("kv_quota_mb", int, 100, "default quota of each KV store"),
    Setting("memory_mb", int, 128, "default guest memory limit"),
    Setting("epoch_tick_ms", float, 1.0, "granularity of guest time limits"),
    Setting("sync_interval_ms", int, 20, "how often a worker checks the registry for changes in the background"),
    Setting("sync_wait_ms", int, 3000, "how long a deploy, rollback or delete waits for every worker to load it"),
    Setting("keep_versions", int, 10, "versions kept per function"),
    Setting("registry_map_size_mb", int, 8192, "LMDB map size (sparse)"),
    Setting("compile_memory_mb", int, 1024, "address space a module's compile may use (a subprocess with RLIMIT_AS)"),
    Setting("compile_timeout_s", float, 30.0, "CPU and wall time a module's compile may take"),
    Setting("max_module_functions", int, 50_000, "most functions a deployed module may define"),
    Setting("max_module_code_bytes", int, 16 * MiB, "largest code section a deployed module may have"),
    Setting("graceful_timeout", int, 30, "seconds a worker gets to finish in-flight requests"),
    Setting("drain_ms", int, 1000, "on reload or recycle, how long open connections may send one more request"),
    Setting("worker_max_rss_mb", int, 1024, "recycle a worker whose RSS exceeds this (0: off)"),
    Setting("worker_max_cpu_percent", float, 0.0, "recycle a worker whose CPU use stays above this (0: off)"),
    Setting("worker_cpu_window_s", float, 30.0, "how long CPU use must stay above the ceiling"),
    Setting("watchdog_interval_ms", int, 1000, "how often the watchdog samples RSS and CPU"),
    Setting("function_log", _bool, True, "write a JSON line per invocation and guest output to <data>/logs"),
    Setting("log_level", str, "info", "server log level"),
    Setting("access_log", _bool, False, "log every HTTP request in gunicorn's access log"),
    # Cluster mode (docs/cluster.md): off while cluster_dsn is empty.
    Setting(
        "cluster_dsn", str, "", "PostgreSQL DSN of the cluster's registry and KV (empty: single node, no database)"
    ),
    Setting("cluster_node_name", str, "", "this node's name in the cluster (default: host name and bind port)"),
    Setting("cluster_wait_ms", int, 10_000, "how long a change waits for every live node to load it"),
    Setting("cluster_lease_ms", int, 5000, "how long a node's lease lasts; past it, unrenewed, it asks its peers"),
    Setting("cluster_node_url", str, "", "where peers reach this node's /readyz (default: http://<bind>)"),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def setting(name: str) -> Setting:
    return _BY_NAME[name]


def reachable_host(host: str) -> str:
    """The address a client on this machine uses for a server listening on `host`."""
    return {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1", "[::]": "[::1]"}.get(host, host)


def url_of(bind: str) -> str:
    """The URL of a server bound to HOST:PORT, as a client on this machine reaches it."""
    host, _, port = bind.rpartition(":")
    return f"http://{reachable_host(host)}:{port}"


# The CLI's and the client's default server URL: the bind setting's default, as a URL.
DEFAULT_URL = url_of(_BY_NAME["bind"].default)


@dataclass(frozen=True)
class Settings:
    data_dir: str
    bind: str
    workers: int
    admin_token: str | None
    max_upload_bytes: int
    max_request_bytes: int
    max_response_bytes: int
    max_header_bytes: int
    max_headers: int
    max_url_bytes: int
    body_timeout_s: float
    timeout_ms: int
    wall_timeout_ms: int
    max_concurrency: int
    max_queue: int
    io_threads: int
    outbound_ca_file: str | None
    kv_map_size_mb: int
    kv_quota_mb: int
    memory_mb: int
    epoch_tick_ms: float
    sync_interval_ms: int
    sync_wait_ms: int
    keep_versions: int
    registry_map_size_mb: int
    compile_memory_mb: int
    compile_timeout_s: float
    max_module_functions: int
    max_module_code_bytes: int
    graceful_timeout: int
    drain_ms: int
    worker_max_rss_mb: int
    worker_max_cpu_percent: float
    worker_cpu_window_s: float
    watchdog_interval_ms: int
    function_log: bool
    log_level: str
    access_log: bool
    cluster_dsn: str
    cluster_node_name: str
    cluster_wait_ms: int
    cluster_lease_ms: int
    cluster_node_url: str

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir).resolve()

    def replace(self, **changes: Any) -> Settings:
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        values.update({k: _BY_NAME[k].kind(v) for k, v in changes.items()})
        return Settings(**values)


assert {f.name for f in fields(Settings)} == set(_BY_NAME), "Settings and SETTINGS disagree"


def default_config_file() -> Path | None:
    candidate = Path(__file__).resolve().parent.parent / "conf" / "hive.toml"
    return candidate if candidate.is_file() else None


def load_settings(env: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None) -> Settings:
    env = os.environ if env is None else env
    values = {s.name: s.default for s in SETTINGS}
    path = env.get("HIVE_CONFIG") or default_config_file()
    if path:
        with open(path, "rb") as f:
            table = tomllib.load(f).get("server", {})
        unknown = set(table) - set(_BY_NAME)
        if unknown:
            raise ValueError(f"unknown settings in {path}: {', '.join(sorted(unknown))}")
        values.update(table)
    for s in SETTINGS:
        if s.env in env:
            values[s.name] = env[s.env]
    values.update({k: v for k, v in (overrides or {}).items() if v is not None})
    return Settings(**{k: _BY_NAME[k].kind(v) for k, v in values.items()})


def to_env(settings: Settings) -> dict[str, str]:
    """The environment that reproduces these settings in a child process (gunicorn)."""
    out = {}
    for s in SETTINGS:
        v = getattr(settings, s.name)
        if v is not None:
            out[s.env] = str(v).lower() if isinstance(v, bool) else str(v)
    return out
