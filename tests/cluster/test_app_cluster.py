"""The web app in cluster mode, in this process (Starlette's TestClient with the lifespan running, a real
PostgreSQL, real LMDB and wasmtime): one node's answers, secrets through PostgreSQL, readiness, and the
single-node default untouched."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from starlette.testclient import TestClient

from hive.app import create_app
from hive.settings import Settings
from tests.cluster.cluster import ADMIN, body_of, module
from tests.cluster.pgserver import PgServer


@pytest.fixture
def dsn(postgres: PgServer) -> str:
    return postgres.new_database("app")


@pytest.fixture
def client(settings: Settings, dsn: str) -> Iterator[TestClient]:
    s = settings.replace(cluster_dsn=dsn, cluster_node_name="solo", cluster_wait_ms=5000)
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        yield c


def deploy(c: TestClient, name: str, build: int) -> dict:
    r = c.post(
        "/api/v1/edge/deploy",
        headers=ADMIN,
        data={"function": name},
        files={"wasm": ("f.wasm", module(name, build), "application/wasm")},
    )
    assert r.status_code == 201, r.text
    return r.json()


def test_single_node_default_has_no_cluster(settings: Settings) -> None:
    assert settings.cluster_dsn == ""
    with TestClient(create_app(settings), raise_server_exceptions=False) as c:
        assert c.get("/api/v1/cluster", headers=ADMIN).json() == {"enabled": False, "nodes": []}
        ready = c.get("/readyz")
        assert ready.status_code == 200 and "cluster" not in ready.json()
        assert c.app.state.hive.cluster is None  # type: ignore[attr-defined]


def test_one_node_cluster(client: TestClient, dsn: str) -> None:
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["cluster"]["caught_up"] is True, ready.text
    live = deploy(client, "hello", 1)
    assert (live["version"], live["nodes"], live["nodes_behind"], live["behind"]) == (1, 1, 0, [])
    assert client.post("/api/v1/edge/hello").content == body_of("hello", 1)
    deploy(client, "hello", 2)
    r = client.post("/api/v1/edge/hello/rollback", headers=ADMIN, json={})
    assert r.status_code == 200 and r.json()["version"] == 1 and r.json()["nodes_behind"] == 0
    assert client.post("/api/v1/edge/hello").content == body_of("hello", 1)
    r = client.post("/api/v1/edge/hello/rollback", headers=ADMIN, json={"version": 9})
    assert (r.status_code, r.json()["error"]) == (404, "not_found")  # the registry's rules, in PostgreSQL
    # The source of truth is PostgreSQL: what the node holds is what its tables say.
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT current, latest FROM hive_functions WHERE name = 'hello'").fetchone() == (1, 2)
    status = client.get("/api/v1/cluster", headers=ADMIN).json()
    assert status["enabled"] and status["node"] == "solo"
    assert [(n["name"], n["health"], n["lag"]) for n in status["nodes"]] == [("solo", "ok", 0)]
    assert client.get("/api/v1/cluster").status_code == 401
    # Secrets go through PostgreSQL too, and reach the replica.
    r = client.put("/api/v1/secrets", headers=ADMIN, json={"API_KEY": "s3cret"})
    assert r.status_code == 200 and r.json()["nodes_behind"] == 0, r.text
    assert client.app.state.hive.registry.secrets() == {"API_KEY": "s3cret"}  # type: ignore[attr-defined]
    r = client.delete("/api/v1/secrets/API_KEY", headers=ADMIN)
    assert r.json()["unset"] == ["API_KEY"] and client.app.state.hive.registry.secrets() == {}  # type: ignore[attr-defined]
    assert client.delete("/api/v1/secrets/API_KEY", headers=ADMIN).json()["unset"] == []
    r = client.delete("/api/v1/edge/hello", headers=ADMIN)
    assert r.status_code == 200 and r.json()["nodes_behind"] == 0
    assert client.post("/api/v1/edge/hello").status_code == 404


def test_unreachable_postgres(settings: Settings) -> None:
    """A node whose PostgreSQL is unreachable from the start: not ready, changes 503 (it serves nothing
    it has not caught up to)."""
    s = settings.replace(
        cluster_dsn="host=127.0.0.1 port=1 user=hive dbname=none connect_timeout=1", cluster_node_name="lonely"
    )
    with TestClient(create_app(s), raise_server_exceptions=False) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503 and ready.json()["cluster"]["caught_up"] is False, ready.text
        r = c.post(
            "/api/v1/edge/deploy",
            headers=ADMIN,
            data={"function": "f"},
            files={"wasm": ("f.wasm", module("f", 1), "application/wasm")},
        )
        assert (r.status_code, r.json()["error"]) == (503, "registry_unavailable"), r.text
        assert "keeps serving" in r.json()["message"]
        r = c.get("/api/v1/cluster", headers=ADMIN)
        assert (r.status_code, r.json()["error"]) == (503, "registry_unavailable")
        r = c.get("/api/v1/kv", headers=ADMIN)
        assert (r.status_code, r.json()["error"]) == (503, "kv_unavailable")
