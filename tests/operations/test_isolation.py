"""isolation = "request": each request gets a fresh instance (no globals carried over), made off the
request path; the default reuses warm instances, as Workers and Supabase do."""

from __future__ import annotations

import json
import struct

import pytest

from tests.security.common import counting_guest, fresh
from tests.support import start_server

pytestmark = pytest.mark.slow


def test_request_isolation_gives_every_request_a_fresh_instance(tmp_path) -> None:
    s = start_server(tmp_path / "data", workers=1)
    try:
        assert s.deploy("warm", counting_guest(b"w")).status_code == 201
        assert s.deploy("fresh", counting_guest(b"f"), json.dumps({"isolation": "request"})).status_code == 201
        assert s.deploy("bad", counting_guest(b"b"), json.dumps({"isolation": "process"})).status_code == 422
        with s.client() as c:  # one connection, one worker
            warm = [struct.unpack("<i", c.post("/api/v1/edge/warm").content)[0] for _ in range(5)]
            fresh_counts = [struct.unpack("<i", c.post("/api/v1/edge/fresh").content)[0] for _ in range(5)]
        assert warm == [1, 2, 3, 4, 5]  # globals persist between requests of a warm instance
        assert fresh_counts == [1, 1, 1, 1, 1]
        before = fresh(s, "GET", "/readyz", headers=s.admin).json()
        with s.client() as c:
            for _ in range(20):
                assert c.post("/api/v1/edge/fresh").status_code == 200
        after = fresh(s, "GET", "/readyz", headers=s.admin).json()
        # one new instance per request, made after its answer: no request waited for one
        assert after["instantiations"] - before["instantiations"] == 20
        assert after["cold_starts"] == before["cold_starts"]
    finally:
        s.stop()
