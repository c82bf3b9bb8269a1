"""The `edge-hive` command line. The only place errors become exit codes.

One module per group of commands: server (serve, reload, status, dev, settings), functions (the
`function` group), stores (`kv`, `secrets`), cluster (`cluster`).
"""

from __future__ import annotations

from typing import Any, NoReturn

import click

from hive.errors import HiveError


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


def admin_client_group(name: str, doc: str, url_help: str = "server URL") -> click.Group:
    """A command group whose commands talk to a server's admin API (--url, --token); its commands get
    the hive.client.Client as their obj."""
    from hive.settings import DEFAULT_URL, setting

    @click.option("--url", envvar="HIVE_URL", default=DEFAULT_URL, show_default=True, help=url_help)
    @click.option("--token", envvar=setting("admin_token").env, help="admin token (default: the local data dir's)")
    @click.pass_context
    def group(ctx: click.Context, url: str, token: str | None) -> None:
        from hive.client import Client, resolve_token

        ctx.obj = Client(url, resolve_token(token))

    return main.group(name, help=doc)(group)


from hive.cli import cluster, functions, server, stores  # noqa: E402,F401 - each registers its commands
