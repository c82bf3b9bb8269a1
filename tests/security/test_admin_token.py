"""The admin token never reaches guest code: the CLI does not send it to invoke routes, the server strips
it from any header before a guest sees it (and counts that), and it is in no server process's environment."""

from __future__ import annotations

import http.server
import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.guests import ECHO_WAT, wat
from tests.operations.test_metrics_logs import sample
from tests.security.common import fresh
from tests.support import BIN, Server, free_port, live_workers, poll, start_server

pytestmark = pytest.mark.slow

TOKEN = "admin-token-that-must-stay-on-the-host-0123456789"


@pytest.fixture(scope="module")
def srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("token") / "data", token=TOKEN)
    assert s.deploy("echo", wat(ECHO_WAT)).status_code == 201
    yield s
    s.stop()


def test_cli_invoke_sends_no_admin_token(tmp_path: Path) -> None:
    """Against a plain recording HTTP server: what the CLI puts on the wire for an invoke."""
    seen: list[dict[str, str]] = []

    class Recorder(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's naming
            seen.append({k.lower(): v for k, v in self.headers.items()})
            self.rfile.read(int(self.headers.get("content-length", 0)))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.HTTPServer(("127.0.0.1", free_port()), Recorder)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        env = {**os.environ, "HIVE_URL": f"http://127.0.0.1:{httpd.server_port}", "HIVE_ADMIN_TOKEN": TOKEN}
        r = subprocess.run(
            [str(BIN / "edge-hive"), "function", "invoke", "echo", "--data", "{}"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0, r.stderr
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert len(seen) == 1
    assert "authorization" not in seen[0], seen[0]
    assert not any(TOKEN in v for v in seen[0].values())


@pytest.mark.parametrize(
    "path",
    ["/api/v1/edge/echo", "/functions/v1/echo/sub", "/api/v1/edge/ech%6f"],
    ids=["fast-path", "supabase-path", "starlette-route"],
)
def test_server_strips_the_admin_token_before_the_guest(srv: Server, path: str) -> None:
    before = _stripped(srv)
    r = fresh(
        srv,
        "POST",
        path,
        content=b"body",
        headers={"authorization": f"Bearer {TOKEN}", "x-other": f"token={TOKEN}", "x-kept": "kept"},
    )
    assert r.status_code == 200, r.text
    assert TOKEN.encode() not in r.content  # the echo guest returns the request envelope it was given
    assert b"x-kept" in r.content and b"body" in r.content
    assert _stripped(srv) == before + 1


def test_other_bearer_tokens_reach_the_guest(srv: Server) -> None:
    before = _stripped(srv)
    r = fresh(srv, "POST", "/api/v1/edge/echo", headers={"authorization": "Bearer a-function-token"})
    assert r.status_code == 200 and b"Bearer a-function-token" in r.content
    assert _stripped(srv) == before


def test_no_server_process_has_the_token_in_its_environment(srv: Server) -> None:
    def environs() -> dict[int, bytes]:
        pids = [srv.proc.pid, *live_workers(srv)]
        return {pid: Path(f"/proc/{pid}/environ").read_bytes() for pid in pids}

    for pid, env in environs().items():
        assert TOKEN.encode() not in env, pid
        assert b"HIVE_ADMIN_TOKEN=" not in env, pid
    # After a reload the new workers still know the token (inherited from the master), and still not
    # through their environment.
    old = live_workers(srv)
    os.kill(srv.proc.pid, signal.SIGHUP)
    poll("workers replaced", lambda: len(p := live_workers(srv)) == 2 and not p & old)
    srv.wait_ready(2)
    for pid, env in environs().items():
        assert TOKEN.encode() not in env, pid
    for _ in range(4):
        assert fresh(srv, "GET", "/api/v1/edge", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
    assert not (srv.data_dir / "admin.token").exists()  # no token was generated in its place


def _stripped(srv: Server) -> float:
    text = fresh(srv, "GET", "/metrics", headers={"authorization": f"Bearer {TOKEN}"}).text
    try:
        return sample(text, "hive_admin_token_stripped_total", function="echo")
    except AssertionError:  # not counted yet
        return 0.0
