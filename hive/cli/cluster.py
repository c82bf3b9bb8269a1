"""The `cluster` group."""

from __future__ import annotations

import json
from typing import Any

import click

from hive.cli import admin_client_group

cluster = admin_client_group(
    "cluster",
    "Cluster mode: the nodes sharing one PostgreSQL registry (docs/cluster.md).",
    url_help="server URL (any node)",
)


@cluster.command("status")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.pass_obj
def cluster_status(client: Any, as_json: bool) -> None:
    """List the nodes with the generation they serve, their lag, lease and health."""
    data = client.admin("GET", "/api/v1/cluster")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    if not data["enabled"]:
        click.echo("cluster mode is off on this server (set cluster_dsn)")
        return
    click.echo(f"cluster {data['cluster_id']}  generation {data['generation']}  (answered by {data['node']})")
    click.echo(
        f"{'NODE':<28} {'HEALTH':<8} {'GENERATION':>10} {'LAG':>5} {'HEARTBEAT':>10} {'LEASE':<8} {'WORKERS':>7}  BIND"
    )
    for n in data["nodes"]:
        lease = n.get("lease") or {}
        held = "held" if lease.get("held") else "expired" if lease else "-"  # the lease: docs/cluster.md
        click.echo(
            f"{n['name']:<28} {n['health']:<8} {n['generation']:>10} {n['lag']:>5} "
            f"{n['heartbeat_age_s']:>9.1f}s {held:<8} {n['workers']:>7}  {n['bind']}"
        )
