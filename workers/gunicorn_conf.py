"""gunicorn settings, derived from Edge Hive's settings (hive.settings). The master stays free of
wasmtime and LMDB: it only prepares the data dir and the admin token."""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import sys
from pathlib import Path

from hive.auth import ensure_admin_token, take_from_environment
from hive.settings import load_settings

# Everything the server writes (registry, rate limits, logs, artifacts, metrics, marks) is for its
# own user only: the registry holds config values and API keys. Workers inherit the umask.
UMASK = 0o077
os.umask(UMASK)
umask = UMASK  # gunicorn's setting, for the files it makes itself (sockets, worker heartbeats)

# Out of the environment before any worker exists; the master keeps it and workers inherit it by fork.
_settings = load_settings(overrides={"admin_token": take_from_environment()})
_data = _settings.data_path


def private_dir(path: Path) -> bool:
    """Create `path` 0700, or make it so when it is ours and open to others (an older version, or a
    mkdir with an ordinary umask, left it 0755). Whether it had to be tightened."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.stat()
    if st.st_uid == os.getuid() and st.st_mode & 0o077:
        os.chmod(path, 0o700)
        return True
    return False


_tightened = private_dir(_data)  # the pidfile lives here, written before on_starting

wsgi_app = "hive.asgi:app"
worker_class = "workers.worker.HiveWorker"
bind = [_settings.bind]
workers = _settings.workers
graceful_timeout = _settings.graceful_timeout
timeout = 30
keepalive = 5
loglevel = _settings.log_level
errorlog = "-"
accesslog = "-" if _settings.access_log else None
proc_name = "edge-hive"
pidfile = str(_data / "edge-hive.pid")
control_socket = str(_data / "gunicorn.ctl")
preload_app = False
# Environment the workers inherit, so they resolve the same settings.
raw_env = [f"HIVE_DATA_DIR={_data}", f"PROMETHEUS_MULTIPROC_DIR={_data / 'metrics'}"]


def on_starting(server: object) -> None:
    # gunicorn's master would say READY=1 before any worker exists; the first worker to finish
    # warming says it instead (workers/worker.py), for the master (MAINPID).
    if "NOTIFY_SOCKET" in os.environ:
        os.environ["HIVE_NOTIFY_SOCKET"] = os.environ.pop("NOTIFY_SOCKET")
    metrics_dir = _data / "metrics"  # counters start afresh with each server
    shutil.rmtree(metrics_dir, ignore_errors=True)
    metrics_dir.mkdir()
    _, token_file = ensure_admin_token(_data, _settings.admin_token)
    log = logging.getLogger("gunicorn.error")
    if token_file is not None:
        log.info("admin token: %s", token_file)
    else:
        log.info("admin token: from HIVE_ADMIN_TOKEN")
    log.info("data dir: %s", _data)
    if _tightened:
        log.warning("data dir %s was open to other users: it is now 0700", _data)


PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def post_fork(server: object, worker: object) -> None:
    # A worker whose master died (SIGKILL, OOM killer) would keep serving with nobody to supervise,
    # reload or replace it, and keep the port, so no new server could start: have the kernel send
    # it SIGTERM (a graceful stop) when the master goes. The master is single-threaded, so "the
    # thread that forked us" is the master itself.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        logging.getLogger("gunicorn.error").warning(
            "prctl(PR_SET_PDEATHSIG) failed (%s): this worker will outlive a killed master",
            os.strerror(ctypes.get_errno()),
        )
    if os.getppid() != server.pid:  # type: ignore[attr-defined]
        sys.exit(0)  # the master died before the line above: no signal will come


def child_exit(server: object, worker: object) -> None:
    from hive.metrics import mark_process_dead  # imports prometheus_client only: no wasmtime, no LMDB

    mark_process_dead(worker.pid)  # type: ignore[attr-defined]
