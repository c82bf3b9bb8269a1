"""https from a guest on a real server: certificates verified, a test CA trusted only through the
outbound_ca_file setting."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.io.guests import Result, fetch, io_guest, program, results
from tests.outbound.common import Upstream, make_pki
from tests.security.common import fresh
from tests.support import start_server

pytestmark = pytest.mark.slow


def test_https_with_the_servers_ca_setting(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    up = Upstream(tag="tls", tls=pki.server_context()).start()
    trusting = start_server(tmp_path / "trusting", workers=1, env={"HIVE_OUTBOUND_CA_FILE": str(pki.ca_file)})
    plain = start_server(tmp_path / "plain", workers=1)
    try:
        manifest = json.dumps({"allowed_hosts": [up.origin]})
        for s in (trusting, plain):
            assert s.deploy("f", io_guest(), manifest).status_code == 201

        def one(server: object) -> Result:
            r = fresh(server, "POST", "/api/v1/edge/f", content=program(("fetch", fetch(up.url("/echo")))))  # type: ignore[arg-type]
            assert r.status_code == 200, r.text
            (res,) = results(r.content)
            assert isinstance(res, Result)
            return res

        assert one(trusting).response().status == 200
        res = one(plain)  # the public roots do not know the test CA: verification stays on
        assert res.kind == 1 and res.code == "tls_error", (res.code, res.message)
    finally:
        trusting.stop()
        plain.stop()
        up.close()
