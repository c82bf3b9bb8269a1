"""supabase-js, unchanged, against a real server: `supabase.functions.invoke(NAME)` reaches Edge Hive at
BASE/functions/v1/NAME, and the errors it raises say whose error it was. supabase-js raises
FunctionsRelayError when a response has `x-relay-error: true` (the server's own errors: a missing
function, a refused key, a timeout) and FunctionsHttpError for any other non-2xx answer (the function's).

The client is tests/node (package.json and lockfile pin @supabase/supabase-js; scripts/toolchains/
supabase-js.sh runs `npm ci` there); tests/node/invoke.mjs runs the calls and prints their outcomes."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import jwt
import pytest

from tests.guests import ECHO_WAT, LOOP_WAT, TRAP_WAT, const_wat, wat
from tests.support import ROOT, Server, start_server

pytestmark = pytest.mark.slow

NODE_DIR = ROOT / "tests" / "node"
KEY = "sb-publishable-" + "p" * 24
SECRET = "super-secret-jwt-token-with-at-least-32-characters"
ANON = jwt.encode({"role": "anon", "iss": "supabase", "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
NODE_TIMEOUT_S = 120


def node_command() -> list[str]:
    node = shutil.which("node")
    if node is None or not (NODE_DIR / "node_modules" / "@supabase" / "supabase-js").is_dir():
        raise RuntimeError("supabase-js is not installed: run scripts/toolchains/supabase-js.sh (scripts/dev runs it)")
    major = int(
        subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30, check=True)
        .stdout.strip()
        .lstrip("v")
        .split(".")[0]
    )
    # supabase-js's createClient needs a global WebSocket (realtime), which Node.js has by default from 22.
    return [node, *(["--experimental-websocket"] if major < 22 else []), str(NODE_DIR / "invoke.mjs")]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("supabase-js") / "data", workers=1)
    deploys: list[tuple[str, bytes, dict[str, Any] | None]] = [
        ("hello", wat(const_wat("hello from edge hive")), None),
        ("echo", wat(ECHO_WAT), None),
        ("oops", wat(const_wat('{"error":"the function failed"}', status=500)), None),
        ("teapot", wat(const_wat("not here", status=404)), None),
        ("keyed", wat(ECHO_WAT), {"auth": {"mode": "api_key", "api_keys": [KEY]}}),
        ("verified", wat(ECHO_WAT), {"auth": {"mode": "jwt", "jwt": {"hs256_secret": SECRET}}}),
        ("small", wat(ECHO_WAT), {"limits": {"max_request_bytes": 16}}),
        ("trap", wat(TRAP_WAT), None),
        ("spin", wat(LOOP_WAT), {"limits": {"timeout_ms": 50}}),
    ]
    for name, wasm, manifest in deploys:
        r = s.deploy(name, wasm, json.dumps(manifest) if manifest else None)
        assert r.status_code == 201, (name, r.text)
    yield s
    s.stop()


CASES = [
    {"name": "ok", "key": ANON, "fn": "hello"},
    {"name": "ok_body", "key": ANON, "fn": "echo", "options": {"body": {"name": "js"}}},
    {"name": "missing", "key": ANON, "fn": "missing"},
    {"name": "guest_500", "key": ANON, "fn": "oops"},
    {"name": "guest_404", "key": ANON, "fn": "teapot"},
    {"name": "key_ok", "key": KEY, "fn": "keyed"},
    {"name": "key_refused", "key": "sb-publishable-" + "w" * 24, "fn": "keyed"},
    {"name": "jwt_ok", "key": ANON, "fn": "verified"},
    {"name": "jwt_refused", "key": KEY, "fn": "verified"},
    {"name": "too_large", "key": ANON, "fn": "small", "options": {"body": "x" * 100}},
    {"name": "trap", "key": ANON, "fn": "trap"},
    {"name": "timeout", "key": ANON, "fn": "spin"},
]


@pytest.fixture(scope="module")
def outcomes(server: Server) -> dict[str, Any]:
    r = subprocess.run(
        [*node_command(), server.url, json.dumps(CASES)],
        capture_output=True,
        text=True,
        timeout=NODE_TIMEOUT_S,
        cwd=NODE_DIR,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_calls_that_succeed(outcomes: dict[str, Any]) -> None:
    assert outcomes["ok"] == {"data": "hello from edge hive", "error": None}
    got = outcomes["ok_body"]
    assert got["error"] is None and '{"name":"js"}' in got["data"] and "x-client-info" in got["data"]
    for case in ("key_ok", "jwt_ok"):
        assert outcomes[case]["error"] is None, outcomes[case]
    assert "x-hive-auth-claims" in outcomes["jwt_ok"]["data"] and '"role":"anon"' in outcomes["jwt_ok"]["data"]


@pytest.mark.parametrize(
    "case, status, code",
    [
        ("missing", 404, "function_not_found"),
        ("key_refused", 401, "invalid_api_key"),
        ("jwt_refused", 401, "invalid_token"),
        ("too_large", 413, "payload_too_large"),
        ("trap", 502, "trap"),
        ("timeout", 504, "timeout"),
    ],
)
def test_the_servers_errors_are_relay_errors(outcomes: dict[str, Any], case: str, status: int, code: str) -> None:
    err = outcomes[case]["error"]
    assert err is not None and err["class"] == "FunctionsRelayError" and err["relay"] and not err["http"], err
    assert err["status"] == status and json.loads(err["body"])["error"] == code


@pytest.mark.parametrize(
    "case, status, body",
    [
        ("guest_500", 500, '{"error":"the function failed"}'),
        ("guest_404", 404, "not here"),
    ],
)
def test_a_functions_own_errors_are_http_errors(outcomes: dict[str, Any], case: str, status: int, body: str) -> None:
    err = outcomes[case]["error"]
    assert err is not None and err["class"] == "FunctionsHttpError" and err["http"] and not err["relay"], err
    assert err["status"] == status and err["body"] == body
