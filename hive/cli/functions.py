"""The `function` group: build, deploy, invoke, list, versions, rollback, logs, new, delete."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from hive.cli import _fail, admin_client_group

# --- function ---


function = admin_client_group("function", "Build, deploy, invoke, list and delete functions.")


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
@click.option(
    "--config",
    "config",
    multiple=True,
    metavar="KEY=VALUE",
    help="a config value or secret for the guest's environment (repeatable)",
)
@click.option(
    "--config-file",
    type=click.Path(exists=True, dir_okay=False),
    help="KEY=VALUE lines (a .env file) for the guest's environment",
)
@click.option(
    "--manifest",
    "manifest_file",
    type=click.Path(exists=True, dir_okay=False),
    help="a deploy manifest (JSON: limits, wasi, config, rate_limit, auth)",
)
@click.pass_obj
def deploy(
    client: Any,
    target: str,
    name: str | None,
    config: tuple[str, ...],
    config_file: str | None,
    manifest_file: str | None,
) -> None:
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
        click.echo(f"built {wasm} ({wasm.stat().st_size} bytes)", err=True)
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

    click.echo(
        f"{'NAME':<20} {'VER':>4} {'SIZE':>8}  {'SHA256':<12} {'AUTH':<8} {'CALLS':>8} {'ERRORS':>7} "
        f"{'P50 MS':>7} {'P99 MS':>7}  DEPLOYED"
    )
    for r in rows:
        click.echo(
            f"{r['function']:<20} {r['version']:>4} {r['size']:>8}  {r['sha256'][:12]} {r['auth']:<8} "
            f"{r['invocations']:>8} {r['errors']:>7} {ms(r['p50_ms']):>7} {ms(r['p99_ms']):>7}  "
            f"{r['deployed_at']}"
        )


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


LANGUAGES = ("c", "rust", "zig", "assemblyscript", "ts", "js")  # ts, js: hive/templates/ts|js (TypeScript/JavaScript)


@function.command()
@click.argument("name")
@click.option("--lang", type=click.Choice(LANGUAGES), default="c", show_default=True)
@click.option(
    "--dir",
    "parent",
    type=click.Path(file_okay=False),
    default=".",
    show_default=True,
    help="where to create the function folder",
)
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
