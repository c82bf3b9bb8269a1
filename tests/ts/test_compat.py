"""Supabase-style TypeScript functions (tests/ts/functions), deployed unchanged on a real server, checked,
and where Deno can run them too (npm's `deno`), compared with Deno's answers to the same requests."""

from __future__ import annotations

import hashlib
import hmac
import json

import httpx
import pytest

from tests.support import Server, poll
from tests.ts.common import ROWS, DenoFunction, answer
from tests.ts.conftest import ECHO_SECRET, WEBHOOK_SECRET

pytestmark = pytest.mark.slow


def hive(server: Server, method: str, name: str, rest: str = "", **kw: object) -> httpx.Response:
    with server.client() as c:
        return c.request(method, f"/functions/v1/{name}{rest}", **kw)  # type: ignore[arg-type]


def deno_call(fn: DenoFunction, method: str, name: str, rest: str = "", **kw: object) -> httpx.Response:
    # Supabase's gateway strips /functions/v1: the function sees /NAME/rest, as here.
    return httpx.request(method, f"{fn.url}/{name}{rest}", timeout=30, **kw)  # type: ignore[arg-type]


def same_as_deno(
    server: Server,
    under_deno: dict[str, DenoFunction],
    method: str,
    name: str,
    rest: str = "",
    compare: tuple[str, ...] = (),
    **kw: object,
) -> tuple[int, object, dict[str, str | None]]:
    """The same request to both; status, body and the `compare` headers must be equal."""
    ours = answer(hive(server, method, name, rest, **kw), compare)
    theirs = answer(deno_call(under_deno[name], method, name, rest, **kw), compare)
    assert ours == theirs, f"Edge Hive {ours} != Deno {theirs}"
    return ours


def function_log(server: Server, name: str) -> str:
    with server.client() as c:
        r = c.get(f"/api/v1/edge/{name}/logs", params={"lines": "200"}, headers=server.admin)
    assert r.status_code == 200, r.text
    return "\n".join(json.loads(line).get("text", "") for line in r.text.splitlines() if line)


# --- CORS with a shared cors.ts ---

PREFLIGHT = {
    "origin": "https://app.example.com",
    "access-control-request-method": "POST",
    "access-control-request-headers": "authorization, content-type",
}
CORS_HEADERS = ("access-control-allow-origin", "access-control-allow-headers", "content-type")


def test_cors_preflight_answers_with_the_shared_headers(ts_server: Server) -> None:
    r = hive(ts_server, "OPTIONS", "browser-with-cors", headers=PREFLIGHT)
    assert r.status_code == 200 and r.text == "ok"
    assert r.headers["access-control-allow-origin"] == "*"
    assert r.headers["access-control-allow-headers"] == "authorization, x-client-info, apikey, content-type"


def test_cors_post_and_bad_json(ts_server: Server) -> None:
    r = hive(
        ts_server, "POST", "browser-with-cors", json={"name": "Edge Hive"}, headers={"origin": "https://a.example"}
    )
    assert r.status_code == 200 and r.json() == {"message": "Hello Edge Hive!"}
    assert r.headers["access-control-allow-origin"] == "*" and r.headers["content-type"] == "application/json"
    bad = hive(ts_server, "POST", "browser-with-cors", content=b"{not json")
    assert bad.status_code == 400 and "error" in bad.json()


def test_cors_same_as_deno(ts_server: Server, under_deno: dict[str, DenoFunction]) -> None:
    same_as_deno(ts_server, under_deno, "OPTIONS", "browser-with-cors", compare=CORS_HEADERS, headers=PREFLIGHT)
    same_as_deno(ts_server, under_deno, "POST", "browser-with-cors", compare=CORS_HEADERS, json={"name": "Deno"})


# --- JSON echo with a secret from the function's config ---

ECHO = {"message": "héllo, wörld", "tags": ["a", "b"]}


def test_echo_needs_the_secret_from_config(ts_server: Server) -> None:
    assert hive(ts_server, "POST", "echo-secret", json=ECHO).status_code == 403
    assert hive(ts_server, "POST", "echo-secret", json=ECHO, headers={"x-echo-secret": "wrong"}).status_code == 403
    r = hive(ts_server, "POST", "echo-secret", "?lang=de", json=ECHO, headers={"x-echo-secret": ECHO_SECRET})
    assert r.status_code == 200 and r.headers["x-powered-by"] == "edge"
    assert r.json() == {
        "echo": ECHO,
        "upper": "HÉLLO, WÖRLD",
        "tags": 2,
        "method": "POST",
        "path": "/echo-secret",
        "lang": "de",
        "region": "eu-west",
        "missing": None,
    }


def test_echo_same_as_deno(ts_server: Server, under_deno: dict[str, DenoFunction]) -> None:
    for secret in (ECHO_SECRET, "wrong"):
        same_as_deno(
            ts_server,
            under_deno,
            "PUT",
            "echo-secret",
            "/sub/path?lang=fr",
            compare=("x-powered-by",),
            json=ECHO,
            headers={"x-echo-secret": secret},
        )


# --- fetch to a loopback upstream ---


@pytest.mark.parametrize(
    "mode, expected",
    [
        (
            "json",
            {
                "status": 200,
                "ok": True,
                "type": "application/json",
                "method": "POST",
                "sent": {"hello": "upstream", "n": [1, 2, 3]},
                "trace": "ts-1",
            },
        ),
        ("form", {"type": "multipart/form-data", "field": True, "file": True}),
        ("parallel", {"texts": ["slow", "slow", "slow"]}),
        ("status", {"status": 500, "ok": False, "body": {"error": "upstream"}}),
        ("timeout", {"aborted": True, "name": "TimeoutError"}),
    ],
)
def test_fetch_to_the_upstream(ts_server: Server, mode: str, expected: dict[str, object]) -> None:
    r = hive(ts_server, "GET", "fetch-upstream", f"?mode={mode}")
    assert r.status_code == 200, r.text
    assert r.json() == expected


@pytest.mark.parametrize("mode", ["json", "form", "parallel", "status", "timeout"])
def test_fetch_same_as_deno(ts_server: Server, under_deno: dict[str, DenoFunction], mode: str) -> None:
    same_as_deno(ts_server, under_deno, "GET", "fetch-upstream", f"?mode={mode}")


def test_a_refused_fetch_is_a_type_error_the_function_catches(ts_server: Server) -> None:
    doc = hive(ts_server, "GET", "fetch-upstream", "?mode=refused").json()
    assert doc["refused"] is True and doc["name"] == "TypeError"
    assert "169.254.169.254" in doc["message"] and "(host_not_allowed)" in doc["message"]


def test_fetches_are_in_the_function_log(ts_server: Server) -> None:
    hive(ts_server, "GET", "fetch-upstream", "?mode=json")
    with ts_server.client() as c:
        r = c.get("/api/v1/edge/fetch-upstream/logs", params={"lines": "200"}, headers=ts_server.admin)
    kinds = {json.loads(line).get("kind") for line in r.text.splitlines() if line}
    assert "outbound" in kinds, r.text[-2000:]


# --- a Hono app with several routes under /functions/v1/hono-app/* ---

HONO = [
    ("GET", "", {}),
    ("GET", "/", {}),
    ("GET", "/users/42?q=ada", {}),
    ("POST", "/users", {"json": {"name": "grace"}, "headers": {"x-client": "tests"}}),
    ("GET", "/nowhere", {}),
    ("GET", "/boom", {}),
    ("OPTIONS", "/users", {"headers": PREFLIGHT}),
]


def test_hono_routes(ts_server: Server) -> None:
    assert hive(ts_server, "GET", "hono-app").text == "Hello Hono!"  # "/hono-app/" is another path to Hono
    assert hive(ts_server, "GET", "hono-app", "/users/42?q=ada").json() == {"id": "42", "q": "ada"}
    r = hive(ts_server, "POST", "hono-app", "/users", json={"name": "grace"}, headers={"x-client": "tests"})
    assert r.status_code == 201 and r.json() == {"created": "grace", "by": "tests"}
    missing = hive(ts_server, "GET", "hono-app", "/nowhere")
    assert missing.status_code == 404 and missing.json() == {"error": "no route", "path": "/hono-app/nowhere"}
    boom = hive(ts_server, "GET", "hono-app", "/boom")
    assert boom.status_code == 500 and boom.json() == {"error": "hono boom"}
    pre = hive(ts_server, "OPTIONS", "hono-app", "/users", headers=PREFLIGHT)
    assert pre.status_code == 204 and pre.headers["access-control-allow-origin"] == "*"


@pytest.mark.parametrize("method, rest, kw", HONO)
def test_hono_same_as_deno(
    ts_server: Server, under_deno: dict[str, DenoFunction], method: str, rest: str, kw: dict[str, object]
) -> None:
    same_as_deno(
        ts_server,
        under_deno,
        method,
        "hono-app",
        rest,
        compare=("access-control-allow-origin", "access-control-allow-methods", "content-type"),
        **kw,
    )


# --- HMAC webhook verification with crypto.subtle ---

EVENT = json.dumps({"id": "evt_123", "type": "invoice.paid", "amount": 4200}).encode()


def signed(body: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    return {"x-signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()}


def test_webhook_checks_the_signature(ts_server: Server) -> None:
    r = hive(ts_server, "POST", "webhook", content=EVENT, headers=signed(EVENT))
    assert r.status_code == 200, r.text
    assert r.json() == {
        "ok": True,
        "type": "invoice.paid",
        "receipt": hmac.new(WEBHOOK_SECRET.encode(), b"evt_123", hashlib.sha256).hexdigest(),
        "digest": hashlib.sha256(EVENT).hexdigest(),
    }
    for headers in (signed(EVENT, "another secret"), signed(EVENT + b" "), {}):
        bad = hive(ts_server, "POST", "webhook", content=EVENT, headers=headers)
        assert bad.status_code == 401 and bad.json() == {"error": "invalid signature"}


def test_webhook_same_as_deno(ts_server: Server, under_deno: dict[str, DenoFunction]) -> None:
    for headers in (signed(EVENT), signed(EVENT, "nope")):
        same_as_deno(ts_server, under_deno, "POST", "webhook", content=EVENT, headers=headers)


# --- supabase-js against a PostgREST-shaped stub ---


def test_supabase_js_selects_from_the_stub(ts_server: Server) -> None:
    r = hive(ts_server, "GET", "supabase-select")
    assert r.status_code == 200, r.text
    assert r.json() == {"data": ROWS}
    assert hive(ts_server, "GET", "supabase-select", "?id=2").json() == {"data": [ROWS[1]]}


def test_supabase_js_same_as_deno(ts_server: Server, under_deno: dict[str, DenoFunction]) -> None:
    for rest in ("", "?id=3", "?id=99"):
        same_as_deno(ts_server, under_deno, "GET", "supabase-select", rest)


# --- failures: a throw, an endless loop, a memory hog ---


def test_a_throw_is_a_500_and_its_stack_points_at_the_ts_line(ts_server: Server) -> None:
    r = hive(ts_server, "POST", "throws", json={"id": 7, "total": -1})
    assert r.status_code == 500
    assert r.json() == {"error": "uncaught_exception", "message": "RangeError: order 7 has a negative total"}
    # index.ts line 8 is the throw; line 15 the handler's call of checkedTotal.
    poll("the stack in the function log", lambda: "index.ts:8:" in function_log(ts_server, "throws"), timeout=10)
    log = function_log(ts_server, "throws")
    assert "Uncaught RangeError: order 7 has a negative total" in log
    assert "at checkedTotal (index.ts:8:" in log and "(index.ts:15:" in log and "function.js:" not in log
    assert hive(ts_server, "POST", "throws", json={"id": 8, "total": 3}).json() == {"total": 3}


def test_a_throw_is_a_500_under_deno_too(ts_server: Server, under_deno: dict[str, DenoFunction]) -> None:
    ours = hive(ts_server, "POST", "throws", json={"id": 7, "total": -1})
    theirs = deno_call(under_deno["throws"], "POST", "throws", json={"id": 7, "total": -1})
    assert ours.status_code == theirs.status_code == 500
    same_as_deno(ts_server, under_deno, "POST", "throws", json={"id": 8, "total": 3})


def test_an_endless_loop_is_a_504_and_the_worker_serves_on(ts_server: Server) -> None:
    pids = ts_server.worker_pids()
    r = hive(ts_server, "POST", "loop", json={"spin": True})
    assert r.status_code == 504 and r.json()["error"] == "timeout"
    assert hive(ts_server, "POST", "loop", json={"spin": False}).text == "still here"
    assert hive(ts_server, "POST", "browser-with-cors", json={"name": "after"}).json() == {"message": "Hello after!"}
    assert ts_server.worker_pids() == pids
    with ts_server.client() as c:
        assert c.get("/readyz").status_code == 200


def test_allocating_past_the_memory_limit_is_a_clean_error(ts_server: Server) -> None:
    pids = ts_server.worker_pids()
    r = hive(ts_server, "GET", "alloc")
    assert r.status_code == 500 and r.json()["error"] == "out_of_memory", r.text
    assert hive(ts_server, "GET", "alloc", "?small=1").json() == {"rows": 1000}
    assert ts_server.worker_pids() == pids
