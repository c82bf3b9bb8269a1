"""Running a server: serve, reload, status, dev, settings."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from hive.auth import hand_over
from hive.cli import _fail, main
from hive.settings import SETTINGS, Setting, load_settings, reachable_host, setting, url_of

F = TypeVar("F", bound=Callable[..., Any])


_CLICK_TYPES: dict[Any, Any] = {int: click.INT, float: click.FLOAT}


def setting_flag(s: Setting, help: str | None = None) -> Callable[[F], F]:
    """The CLI flag of one setting, from the settings table. Unset means "not given" (None), so the
    TOML file and the HIVE_* variables still apply beneath it."""
    assert s.cli, f"setting {s.name} has no CLI flag"
    return click.option(
        s.cli, s.name, type=_CLICK_TYPES.get(s.kind), default=None, help=f"{help or s.help} (default {s.default})"
    )


def server_flags(f: F) -> F:
    """A flag for every setting the table marks for the CLI (`cli=`), in the table's order."""
    for s in reversed(SETTINGS):
        if s.cli:
            f = setting_flag(s)(f)
    return f


@main.command()
@server_flags
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="hive.toml")
def serve(config_file: str | None, **flags: Any) -> None:
    """Run the server in the foreground (gunicorn master + workers)."""
    env = dict(os.environ)
    if config_file:
        env["HIVE_CONFIG"] = str(Path(config_file).resolve())
    settings = load_settings(env, flags)  # fails early on a bad setting
    # Pass on only what the flags set (and the resolved data dir). Exporting every setting as HIVE_*
    # would pin the TOML values, and a SIGHUP would not pick up an edited hive.toml.
    env.update({setting(name).env: str(value) for name, value in flags.items() if value is not None})
    env["HIVE_DATA_DIR"] = str(settings.data_path)
    hand_over(env)  # the token travels in a pipe, not in the server's environment (hive.auth)
    # A file path (not python:module) makes gunicorn re-read the settings on SIGHUP.
    spec = importlib.util.find_spec("workers.gunicorn_conf")
    if spec is None or spec.origin is None:
        _fail("workers.gunicorn_conf is missing: reinstall edge-hive (pip install -e .)")
    conf = spec.origin
    argv = [sys.executable, "-m", "gunicorn", "-c", str(conf)]
    # exec: this process becomes the gunicorn master, so its PID is the server's.
    os.execvpe(argv[0], argv, env)


def _master_pid(data_dir: str | None) -> int:
    settings = load_settings(overrides={"data_dir": data_dir})
    pidfile = settings.data_path / "edge-hive.pid"
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (FileNotFoundError, ValueError, ProcessLookupError):
        _fail(f"no running server found through {pidfile} (is `edge-hive serve` running with this data dir?)")
    return pid


@main.command()
@setting_flag(setting("data_dir"), help="the server's data dir")
def reload(data_dir: str | None) -> None:
    """Reload gracefully: re-read settings and replace every worker (SIGHUP to the master)."""
    pid = _master_pid(data_dir)
    os.kill(pid, signal.SIGHUP)
    click.echo(f"sent SIGHUP to the master (pid {pid}); new workers warm every function before they accept")


def _listening(master: Any) -> str | None:
    """HOST:PORT the master listens on. The server may run with --bind or HIVE_BIND, which this
    process does not see, so ask the kernel rather than the settings."""
    import psutil

    try:
        conns = (
            master.net_connections(kind="inet") if hasattr(master, "net_connections") else master.connections("inet")
        )
    except psutil.Error:
        return None
    for c in conns:
        if c.status == psutil.CONN_LISTEN:
            host = reachable_host(c.laddr.ip)
            return f"[{host}]:{c.laddr.port}" if ":" in host else f"{host}:{c.laddr.port}"
    return None


@main.command()
@setting_flag(setting("data_dir"), help="the server's data dir")
@click.option("--json", "as_json", is_flag=True)
def status(data_dir: str | None, as_json: bool) -> None:
    """Show the master, its workers (RSS, uptime) and the function count."""
    import httpx
    import psutil

    pid = _master_pid(data_dir)
    master = psutil.Process(pid)
    now = time.time()
    workers: list[dict[str, float]] = []
    for child in master.children():
        try:
            workers.append(
                {
                    "pid": child.pid,
                    "rss_mib": round(child.memory_info().rss / 2**20, 1),
                    "uptime_s": round(now - child.create_time(), 1),
                }
            )
        except psutil.NoSuchProcess:  # a worker that exits while we look (reload, recycle)
            continue
    bind = _listening(master) or load_settings(overrides={"data_dir": data_dir}).bind
    functions = None
    try:
        functions = httpx.get(url_of(bind) + "/readyz", timeout=5).json().get("warm")
    except (httpx.HTTPError, ValueError):
        pass
    uptime_s = round(now - master.create_time(), 1)
    info = {"master": {"pid": pid, "uptime_s": uptime_s}, "bind": bind, "workers": workers, "functions": functions}
    if as_json:
        click.echo(json.dumps(info, indent=2))
        return
    click.echo(f"master  pid {pid}  up {uptime_s:.0f}s  listening on {bind}")
    for w in workers:
        click.echo(f"worker  pid {w['pid']:<7} rss {w['rss_mib']:>7.1f} MiB  up {w['uptime_s']:.0f}s")
    click.echo(f"functions {functions if functions is not None else 'unknown (server not answering)'}")


@main.command()
@click.argument("directory", default="functions", type=click.Path(file_okay=False))
# 8787 as wrangler dev, not serve's 8443: both can run side by side; .hive-dev beside serve's .hive.
@click.option("--port", type=click.IntRange(1, 65535), default=8787, show_default=True, help="port on 127.0.0.1")
@click.option(
    "--data-dir",
    default=".hive-dev",
    show_default=True,
    type=click.Path(file_okay=False),
    help="the dev server's registry, artifacts, logs and admin token",
)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True)
def dev(directory: str, port: int, data_dir: str, workers: int) -> None:
    """Serve DIRECTORY's functions locally, rebuild and redeploy each on save, and stream their logs."""
    from hive import dev as devloop

    devloop.run(Path(directory), port=port, data_dir=Path(data_dir), workers=workers, echo=click.echo)


@main.command("settings")
def show_settings() -> None:
    """List every server setting, its environment variable and its value (and its `serve` flag)."""
    current = load_settings()
    for s in SETTINGS:
        value = getattr(current, s.name)
        if s.name in ("admin_token", "cluster_dsn") and value:  # the DSN may hold a password
            value = "(set)"
        flag = f" [{s.cli}]" if s.cli else ""
        click.echo(f"{s.name:<22} {s.env:<28} {value!s:<24} {s.help}{flag}")
