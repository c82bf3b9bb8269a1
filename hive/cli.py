"""The `edge-hive` command line. The only place errors become exit codes."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from hive.errors import HiveError
from hive.settings import SETTINGS, load_settings, to_env


def _fail(message: str) -> None:
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


@main.command()
@click.option("--bind", help="HOST:PORT to listen on (default 127.0.0.1:8443)")
@click.option("--workers", type=int, help="worker processes")
@click.option("--data-dir", help="registry and cache folder (default ./.hive)")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False), help="hive.toml")
def serve(bind: str | None, workers: int | None, data_dir: str | None, config_file: str | None) -> None:
    """Run the server in the foreground (gunicorn master + workers)."""
    env = dict(os.environ)
    if config_file:
        env["HIVE_CONFIG"] = str(Path(config_file).resolve())
    settings = load_settings(env, {"bind": bind, "workers": workers, "data_dir": data_dir})
    settings = settings.replace(data_dir=str(settings.data_path))
    env.update(to_env(settings))
    argv = [sys.executable, "-m", "gunicorn", "-c", "python:workers.gunicorn_conf"]
    # exec: this process becomes the gunicorn master, so its PID is the server's.
    os.execvpe(argv[0], argv, env)


@main.command("settings")
def show_settings() -> None:
    """List every server setting, its environment variable and its value."""
    current = load_settings()
    for s in SETTINGS:
        value = getattr(current, s.name)
        if s.name == "admin_token" and value:
            value = "(set)"
        click.echo(f"{s.name:<22} {s.env:<28} {value!s:<24} {s.help}")


# --- function ---


@main.group()
@click.option("--url", envvar="HIVE_URL", default="http://127.0.0.1:8443", show_default=True, help="server URL")
@click.option("--token", envvar="HIVE_ADMIN_TOKEN", help="admin token (default: the local data dir's)")
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


def _manifest_json(folder: Path) -> str | None:
    from hive.build import load_function_manifest

    m = load_function_manifest(folder)
    out: dict[str, Any] = {}
    if "limits" in m:
        out["limits"] = m["limits"]
    if "wasi" in m.get("permissions", {}):
        out["wasi"] = m["permissions"]["wasi"]
    if "config" in m:
        out["config"] = {k: str(v) for k, v in m["config"].items()}
    return json.dumps(out) if out else None


@function.command()
@click.argument("target")
@click.option("--name", help="function name (default: the manifest's, or the file's stem)")
@click.pass_obj
def deploy(client: Any, target: str, name: str | None) -> None:
    """Deploy a function folder (built first) or a .wasm file."""
    manifest = None
    if target.endswith(".wasm") and Path(target).is_file():
        wasm = Path(target)
        name = name or wasm.stem
    else:
        from hive.build import build_function, load_function_manifest

        folder = _function_dir(target)
        if folder is None:
            _fail(f"no function folder or .wasm file at {target!r}")
        wasm = build_function(folder, echo=lambda line: click.echo(line, err=True))
        name = name or load_function_manifest(folder)["function"]["name"]
        manifest = _manifest_json(folder)
    rec = client.deploy(name, wasm, manifest)
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
    r = client.request(method.upper(), f"/api/v1/edge/{name}", content=body, headers=headers)
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
    click.echo(f"{'NAME':<24} {'VERSION':>7} {'SIZE':>9}  {'SHA256':<12}  DEPLOYED")
    for r in rows:
        click.echo(f"{r['function']:<24} {r['version']:>7} {r['size']:>9}  {r['sha256'][:12]}  {r['deployed_at']}")


@function.command()
@click.argument("name")
@click.pass_obj
def delete(client: Any, name: str) -> None:
    """Delete a function; later invocations get 404."""
    client.admin("DELETE", f"/api/v1/edge/{name}")
    click.echo(f"deleted {name}")


if __name__ == "__main__":
    main()
