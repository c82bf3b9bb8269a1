"""The `kv` and `secrets` groups."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from hive.cli import _fail, admin_client_group
from hive.cli.functions import _parse_pairs, _read_env_file

# --- secrets ---


secrets = admin_client_group(
    "secrets", "Server-wide secrets every function sees in its environment (like `supabase secrets`)."
)


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


kv = admin_client_group("kv", 'Read and write the KV stores functions share (granted with "kv" in a manifest).')


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
def kv_set(
    client: Any, store: str, key: str, value: str | None, from_file: str | None, ttl: float | None, as_json: bool
) -> None:
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
