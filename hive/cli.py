"""The `edge-hive` command line. The only place errors become exit codes."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from hive.auth import hand_over
from hive.errors import HiveError
from hive.settings import DEFAULT_URL, SETTINGS, Setting, load_settings, reachable_host, setting, url_of

F = TypeVar("F", bound=Callable[..., Any])


def _fail(message: str) -> NoReturn:
    raise click.ClickException(message)


class _Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HiveError as e:
            raise click.ClickException(e.message) from None


@click.group(cls=_Group)
@click.version_option(package_name="edge-hive")
def main() -> None:
    """Edge Hive: self-hosted WebAssembly edge functions."""


_CLICK_TYPES: dict[Any, Any] = {int: click.INT, float: click.FLOAT}


def setting_flag(s: Setting, help: str | None = None) -> Callable[[F], F]:
    """The CLI flag of one setting, from the settings table. Unset means "not given" (None), so the
    TOML file and the HIVE_* variables still apply beneath it."""
    assert s.cli, f"setting {s.name} has no CLI flag"
    return click.option(s.cli, s.name, type=_CLICK_TYPES.get(s.kind), default=None,
                        help=f"{help or s.help} (default {s.default})")


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
        conns = master.net_connections(kind="inet") if hasattr(master, "net_connections") else master.connections("inet")
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
            workers.append({"pid": child.pid, "rss_mib": round(child.memory_info().rss / 2**20, 1),
                            "uptime_s": round(now - child.create_time(), 1)})
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
@click.option("--port", type=click.IntRange(1, 65535), default=8787, show_default=True,
              help="port on 127.0.0.1")
@click.option("--data-dir", default=".hive-dev", show_default=True, type=click.Path(file_okay=False),
              help="the dev server's registry, artifacts, logs and admin token")
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


# --- function ---


@main.group()
@click.option("--url", envvar="HIVE_URL", default=DEFAULT_URL, show_default=True, help="server URL")
@click.option("--token", envvar=setting("admin_token").env, help="admin token (default: the local data dir's)")
@click.pass_context
def function(ctx: click.Context, url: str, token: str | None) -> None:
    """Build, deploy, invoke, list and delete functions."""
    from hive.client import Client, resolve_token

    ctx.obj = Client(url, resolve_token(token))


def _function_dir(target: str) -> Path | None:
    p = Path(target)
    for candidate in (p, Path("functions") / target):
        if (candidate / "hive.toml").is_file():
            return candidate
    if p.name == "hive.toml" and p.is_file():
        return p.parent
    return None


@function.command()
@click.argument("target")
def build(target: str) -> None:
    """Build a function folder (one with hive.toml) into <folder>/<name>.wasm."""
    from hive.build import build_function

    folder = _function_dir(target)
    if folder is None:
        _fail(f"no function folder at {target!r} (expected a hive.toml)")
    out = build_function(folder, echo=lambda line: click.echo(line, err=True))
    click.echo(f"built {out} ({out.stat().st_size} bytes)")


def _parse_pairs(pairs: tuple[str, ...], origin: str) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            _fail(f"{origin}: {pair!r} must look like KEY=VALUE")
        out[key.strip()] = value
    return out


def _read_env_file(path: str) -> dict[str, str]:
    lines = [ln.strip() for ln in Path(path).read_text().splitlines()]
    pairs = tuple(ln.removeprefix("export ") for ln in lines if ln and not ln.startswith("#"))
    return {k: v.strip().strip('"').strip("'") for k, v in _parse_pairs(pairs, path).items()}


@function.command()
@click.argument("target")
@click.option("--name", help="function name (default: the manifest's, or the file's stem)")
@click.option("--config", "config", multiple=True, metavar="KEY=VALUE",
              help="a config value or secret for the guest's environment (repeatable)")
@click.option("--config-file", type=click.Path(exists=True, dir_okay=False),
              help="KEY=VALUE lines (a .env file) for the guest's environment")
@click.option("--manifest", "manifest_file", type=click.Path(exists=True, dir_okay=False),
              help="a deploy manifest (JSON: limits, wasi, config, rate_limit, auth)")
@click.pass_obj
def deploy(client: Any, target: str, name: str | None, config: tuple[str, ...], config_file: str | None,
           manifest_file: str | None) -> None:
    """Deploy a function folder (built first) or a .wasm file.

    The manifest comes from hive.toml's [limits], [rate_limit], [auth], [permissions] and [config],
    then --manifest, then --config-file, then --config; later ones win.
    """
    manifest: dict[str, Any] = {}
    if target.endswith(".wasm") and Path(target).is_file():
        wasm = Path(target)
        name = name or wasm.stem
    else:
        from hive.build import build_function, deploy_manifest, load_function_manifest

        folder = _function_dir(target)
        if folder is None:
            _fail(f"no function folder or .wasm file at {target!r} (run `edge-hive function new NAME` to start one)")
        wasm = build_function(folder, echo=lambda line: click.echo(line, err=True))
        name = name or load_function_manifest(folder)["function"]["name"]
        manifest = deploy_manifest(folder)
    if manifest_file:
        manifest.update(json.loads(Path(manifest_file).read_text()))
    env = {**(_read_env_file(config_file) if config_file else {}), **_parse_pairs(config, "--config")}
    if env:
        manifest["config"] = {**manifest.get("config", {}), **env}
    rec = client.deploy(name, wasm, json.dumps(manifest) if manifest else None)
    click.echo(f"deployed {rec['function']} v{rec['version']} sha256={rec['sha256'][:12]} ({rec['size']} bytes)")


@function.command()
@click.argument("name")
@click.option("--data", "-d", help="request body: JSON text, or @file")
@click.option("--method", "-X", default="POST", show_default=True)
@click.option("--header", "-H", multiple=True, help="K:V, repeatable")
@click.pass_obj
def invoke(client: Any, name: str, data: str | None, method: str, header: tuple[str, ...]) -> None:
    """Call a function and print the status and the body."""
    headers = {}
    for h in header:
        k, sep, v = h.partition(":")
        if not sep:
            _fail(f"--header {h!r} must look like Name:Value")
        headers[k.strip()] = v.strip()
    body = b""
    if data is not None:
        body = Path(data[1:]).read_bytes() if data.startswith("@") else data.encode()
        headers.setdefault("content-type", "application/json")
    # Never the admin token: the function sees every header it is sent.
    r = client.request(method.upper(), f"/api/v1/edge/{name}", content=body, headers=headers, admin=False)
    click.echo(f"{r.status_code} {r.reason_phrase}", err=True)
    try:
        click.echo(json.dumps(r.json(), indent=2, ensure_ascii=False))
    except ValueError:
        click.echo(r.text)
    if r.status_code >= 400:
        sys.exit(1)


@function.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_obj
def list_(client: Any, as_json: bool) -> None:
    """List deployed functions."""
    rows = client.admin("GET", "/api/v1/edge")["functions"]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    click.echo(f"{'NAME':<20} {'VER':>4} {'SIZE':>8}  {'SHA256':<12} {'AUTH':<8} {'CALLS':>8} {'ERRORS':>7} "
               f"{'P50 MS':>7} {'P99 MS':>7}  DEPLOYED")
    for r in rows:
        click.echo(f"{r['function']:<20} {r['version']:>4} {r['size']:>8}  {r['sha256'][:12]} {r['auth']:<8} "
                   f"{r['invocations']:>8} {r['errors']:>7} {ms(r['p50_ms']):>7} {ms(r['p99_ms']):>7}  "
                   f"{r['deployed_at']}")


@function.command()
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_obj
def versions(client: Any, name: str, as_json: bool) -> None:
    """List the kept versions of a function; * marks the current one."""
    data = client.admin("GET", f"/api/v1/edge/{name}/versions")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    click.echo(f"  {'VERSION':>7} {'SIZE':>9}  {'SHA256':<12}  DEPLOYED")
    for v in data["versions"]:
        mark = "*" if v["version"] == data["current"] else " "
        click.echo(f"{mark} {v['version']:>7} {v['size']:>9}  {v['sha256'][:12]}  {v['deployed_at']}")


@function.command()
@click.argument("name")
@click.option("--to", "version", type=int, help="version to make current (default: the previous one)")
@click.pass_obj
def rollback(client: Any, name: str, version: int | None) -> None:
    """Move the current-version pointer back, atomically."""
    body = {} if version is None else {"version": version}
    rec = client.admin("POST", f"/api/v1/edge/{name}/rollback", json=body)
    click.echo(f"{name} now serves v{rec['version']} sha256={rec['sha256'][:12]}")


@function.command()
@click.argument("name")
@click.option("--follow", "-f", is_flag=True, help="keep printing new lines")
@click.option("--lines", "-n", default=50, show_default=True, help="how many recent lines")
@click.option("--json", "as_json", is_flag=True, help="raw JSON lines")
@click.pass_obj
def logs(client: Any, name: str, follow: bool, lines: int, as_json: bool) -> None:
    """Show a function's recent invocations and guest output."""
    import httpx

    from hive.logs import format_record

    params = {"lines": str(lines), "follow": "1" if follow else "0"}
    url = client.url.rstrip("/") + f"/api/v1/edge/{name}/logs"
    try:
        with httpx.stream("GET", url, params=params, headers=client._headers(), timeout=None) as r:
            if r.status_code >= 400:
                r.read()
                from hive.client import api_error

                raise api_error(r)
            for line in r.iter_lines():
                if not line:
                    continue
                if as_json:
                    click.echo(line)
                    continue
                click.echo(format_record(json.loads(line)))
    except httpx.ConnectError:
        _fail(f"cannot reach the server at {client.url}")
    except KeyboardInterrupt:
        pass


# --- cluster ---


@main.group()
@click.option("--url", envvar="HIVE_URL", default=DEFAULT_URL, show_default=True, help="server URL (any node)")
@click.option("--token", envvar="HIVE_ADMIN_TOKEN", help="admin token (default: the local data dir's)")
@click.pass_context
def cluster(ctx: click.Context, url: str, token: str | None) -> None:
    """Cluster mode: the nodes sharing one PostgreSQL registry (docs/cluster.md)."""
    from hive.client import Client, resolve_token

    ctx.obj = Client(url, resolve_token(token))


@cluster.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_obj
def cluster_status(client: Any, as_json: bool) -> None:
    """List the nodes with the generation they serve, their lag and health."""
    data = client.admin("GET", "/api/v1/cluster")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data["enabled"]:
        click.echo("cluster mode is off on this server (set cluster_dsn)")
        return
    click.echo(f"cluster {data['cluster_id']}  generation {data['generation']}  (answered by {data['node']})")
    click.echo(f"{'NODE':<28} {'HEALTH':<8} {'GENERATION':>10} {'LAG':>5} {'HEARTBEAT':>10} {'WORKERS':>7}  BIND")
    for n in data["nodes"]:
        click.echo(f"{n['name']:<28} {n['health']:<8} {n['generation']:>10} {n['lag']:>5} "
                   f"{n['heartbeat_age_s']:>9.1f}s {n['workers']:>7}  {n['bind']}")


# --- secrets ---


@main.group()
@click.option("--url", envvar="HIVE_URL", default=DEFAULT_URL, show_default=True, help="server URL")
@click.option("--token", envvar="HIVE_ADMIN_TOKEN", help="admin token (default: the local data dir's)")
@click.pass_context
def secrets(ctx: click.Context, url: str, token: str | None) -> None:
    """Server-wide secrets every function sees in its environment (like `supabase secrets`)."""
    from hive.client import Client, resolve_token

    ctx.obj = Client(url, resolve_token(token))


@secrets.command("set")
@click.argument("pairs", nargs=-1, required=True, metavar="NAME=VALUE...")
@click.option("--env-file", type=click.Path(exists=True, dir_okay=False), help="NAME=VALUE lines (a .env file)")
@click.pass_obj
def secrets_set(client: Any, pairs: tuple[str, ...], env_file: str | None) -> None:
    """Set secrets; a function's own config of the same name wins. Live on every worker, no redeploy."""
    values = {**(_read_env_file(env_file) if env_file else {}), **_parse_pairs(pairs, "secrets set")}
    data = client.admin("PUT", "/api/v1/secrets", json=values)
    click.echo(f"set {', '.join(data['set'])} (generation {data['generation']})")


@secrets.command("list")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_obj
def secrets_list(client: Any, as_json: bool) -> None:
    """List the secrets' names (never their values)."""
    names = [s["name"] for s in client.admin("GET", "/api/v1/secrets")["secrets"]]
    click.echo(json.dumps(names) if as_json else "\n".join(names))


@secrets.command("unset")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def secrets_unset(client: Any, names: tuple[str, ...]) -> None:
    """Remove secrets."""
    from urllib.parse import quote

    for name in names:
        data = client.admin("DELETE", f"/api/v1/secrets/{quote(name, safe='')}")
        click.echo(f"unset {name}" if data["unset"] else f"{name} was not set")


# --- kv ---


@main.group()
@click.option("--url", envvar="HIVE_URL", default=DEFAULT_URL, show_default=True, help="server URL")
@click.option("--token", envvar="HIVE_ADMIN_TOKEN", help="admin token (default: the local data dir's)")
@click.pass_context
def kv(ctx: click.Context, url: str, token: str | None) -> None:
    """Read and write the KV stores functions share (granted with "kv" in a manifest)."""
    from hive.client import Client, resolve_token

    ctx.obj = Client(url, resolve_token(token))


def _kv_path(store: str, key: str | None = None) -> str:
    from urllib.parse import quote

    return f"/api/v1/kv/{quote(store, safe='')}" + ("" if key is None else "/" + quote(key, safe=""))


@kv.command("list")
@click.argument("store", required=False)
@click.option("--prefix", default="", help="only keys starting with this")
@click.option("--limit", default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_obj
def kv_list(client: Any, store: str | None, prefix: str, limit: int, as_json: bool) -> None:
    """List the stores, or the keys of STORE (every page)."""
    if store is None:
        data = client.admin("GET", "/api/v1/kv")
        if as_json:
            click.echo(json.dumps(data, indent=2))
            return
        click.echo(f"{'STORE':<24} {'KEYS':>8} {'BYTES':>12}")
        for s in data["stores"]:
            click.echo(f"{s['name']:<24} {s['keys']:>8} {s['bytes']:>12}")
        return
    keys: list[str] = []
    cursor = None
    while True:
        params = {"prefix": prefix, "limit": str(limit), **({"cursor": cursor} if cursor else {})}
        page = client.admin("GET", _kv_path(store), params=params)
        keys += page["keys"]
        cursor = page["cursor"]
        if cursor is None:
            break
    if as_json:
        click.echo(json.dumps({"store": store, "keys": keys}, indent=2))
    else:
        for k in keys:
            click.echo(k)


@kv.command("get")
@click.argument("store")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="print {store, key, value} (value as UTF-8 text)")
@click.pass_obj
def kv_get(client: Any, store: str, key: str, as_json: bool) -> None:
    """Print the value of KEY in STORE."""
    r = client.request("GET", _kv_path(store, key))
    if r.status_code >= 400:
        from hive.client import api_error

        raise api_error(r)
    if as_json:
        click.echo(json.dumps({"store": store, "key": key, "value": r.content.decode("utf-8", "replace")}))
    else:
        click.echo(r.content.decode("utf-8", "replace"))


@kv.command("set")
@click.argument("store")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--file", "from_file", type=click.Path(exists=True, dir_okay=False), help="the value from a file")
@click.option("--ttl", type=float, help="seconds until the key expires")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_obj
def kv_set(client: Any, store: str, key: str, value: str | None, from_file: str | None, ttl: float | None,
           as_json: bool) -> None:
    """Set KEY in STORE to VALUE (or the contents of --file)."""
    if (value is None) == (from_file is None):
        _fail("give the value as an argument or with --file, not both")
    body = Path(from_file).read_bytes() if from_file else value.encode()  # type: ignore[union-attr]
    data = client.admin("PUT", _kv_path(store, key), content=body, params={"ttl_s": str(ttl)} if ttl else None)
    click.echo(json.dumps(data) if as_json else f"set {store}/{key} ({data['bytes']} bytes)")


@kv.command("delete")
@click.argument("store")
@click.argument("key")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_obj
def kv_delete(client: Any, store: str, key: str, as_json: bool) -> None:
    """Delete KEY from STORE."""
    data = client.admin("DELETE", _kv_path(store, key))
    if as_json:
        click.echo(json.dumps(data))
    else:
        click.echo(f"deleted {store}/{key}" if data["deleted"] else f"{store}/{key} did not exist")


LANGUAGES = ("c", "rust", "zig", "assemblyscript", "ts", "js")  # ts, js: hive/templates/ts|js (TypeScript/JavaScript)


@function.command()
@click.argument("name")
@click.option("--lang", type=click.Choice(LANGUAGES), default="c", show_default=True)
@click.option("--dir", "parent", type=click.Path(file_okay=False), default=".", show_default=True,
              help="where to create the function folder")
def new(name: str, lang: str, parent: str) -> None:
    """Scaffold a buildable function from a template."""
    from importlib.resources import files

    from hive.manifest import validate_name

    validate_name(name)
    dest = Path(parent) / name
    if dest.exists():
        _fail(f"{dest} already exists")
    template = files("hive") / "templates" / lang

    def copy(src: Any, to: Path) -> None:
        to.mkdir(parents=True, exist_ok=True)
        for item in src.iterdir():
            target = to / item.name.replace("{{name}}", name)
            if item.is_dir():
                copy(item, target)
            else:
                target.write_text(item.read_text().replace("{{name}}", name))

    copy(template, dest)
    click.echo(f"created {dest} ({lang})")
    click.echo(f"next: edge-hive function deploy {dest}   (builds, then uploads)")


@function.command()
@click.argument("name")
@click.pass_obj
def delete(client: Any, name: str) -> None:
    """Delete a function; later invocations get 404."""
    client.admin("DELETE", f"/api/v1/edge/{name}")
    click.echo(f"deleted {name}")


if __name__ == "__main__":
    main()
