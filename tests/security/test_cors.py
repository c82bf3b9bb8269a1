"""CORS on a real server, through both adapters of the invocation core (the fast path
`/api/v1/edge/NAME` and the Starlette route, reached with a percent-escape): preflights answered
before auth from a function's `cors` section (or passed to the function without one, never a 401),
the allow-* headers on the function's answers, the server's own errors readable cross-origin and
marked `x-relay-error: true` (supabase-js's FunctionsRelayError) while a guest's own 4xx/5xx is not,
credentials mode, and the manifest checks of the section."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from hive import abi
from tests.guests import ECHO_WAT, LOOP_WAT, TRAP_WAT, const_wat, wat
from tests.http.test_fastpath import Conn, escaped, exchange, req
from tests.support import Server, start_server

pytestmark = pytest.mark.slow

KEY = "k" * 24
SECRET = "s" * 40
APP = "https://app.example.com"
EVIL = "https://evil.example.net"
CORS = {"allow_origins": [APP, "http://127.0.0.1:5173"], "expose_headers": ["x", "x-request-id"], "max_age": 600}
KEYED = {"mode": "api_key", "api_keys": [KEY]}
JWT = {"mode": "jwt", "jwt": {"hs256_secret": SECRET}}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("cors") / "data", workers=1)
    echo, trap, spin = wat(ECHO_WAT), wat(TRAP_WAT), wat(LOOP_WAT)
    deploys: list[tuple[str, bytes, dict[str, Any] | None]] = [
        ("keyed", echo, {"auth": KEYED, "cors": CORS}),
        ("jwtfn", echo, {"auth": JWT, "cors": {"allow_origins": ["*"]}}),
        ("protected", echo, {"auth": KEYED}),  # no cors section: the function answers preflights
        ("jwtbare", echo, {"auth": JWT}),
        ("open", echo, None),
        ("creds", echo, {"auth": KEYED, "cors": {"allow_origins": [APP], "allow_credentials": True}}),
        (
            "credsany",
            echo,
            {
                "cors": {
                    "allow_origins": ["*"],
                    "allow_credentials": True,
                    "allow_headers": ["*"],
                    "allow_methods": ["*"],
                    "expose_headers": ["*"],
                }
            },
        ),
        (
            "narrow",
            echo,
            {
                "auth": JWT,
                "cors": {
                    "allow_origins": [APP],
                    "allow_methods": ["get", "POST"],
                    "allow_headers": ["authorization", "x-custom"],
                    "max_age": 0,
                },
            },
        ),
        ("mixedcase", echo, {"cors": {"allow_origins": ["https://App.Example.COM:443/"]}}),
        # the server's errors, with and without a cors section
        ("small", echo, {"limits": {"max_request_bytes": 10}, "cors": CORS}),
        ("smallbare", echo, {"limits": {"max_request_bytes": 10}}),
        ("limited", echo, {"rate_limit": {"rps": 0.001, "burst": 1}, "cors": CORS}),
        ("limitedbare", echo, {"rate_limit": {"rps": 0.001, "burst": 1}}),
        ("trap", trap, {"cors": CORS}),
        ("trapbare", trap, None),
        ("spin", spin, {"limits": {"timeout_ms": 50}, "cors": CORS}),
        ("spinbare", spin, {"limits": {"timeout_ms": 50}}),
        # a guest's own errors
        ("teapot", wat(const_wat("no such thing", status=404)), {"cors": CORS}),
        ("oops", wat(const_wat("guest broke", status=500)), {"cors": CORS}),
        ("oopsbare", wat(const_wat("guest broke", status=500)), None),
    ]
    for name, wasm, manifest in deploys:
        r = s.deploy(name, wasm, json.dumps(manifest) if manifest else None)
        assert r.status_code == 201, (name, r.text)
    yield s
    s.stop()


def targets(name: str, prefix: str = "/api/v1/edge/") -> list[str]:
    """The fast path and the Starlette route to one function."""
    return [prefix + name, prefix + escaped(name)]


def values(headers: list[tuple[str, str]], name: str) -> list[str]:
    return [v for k, v in headers if k == name]


def one(headers: list[tuple[str, str]], name: str) -> str | None:
    got = values(headers, name)
    assert len(got) <= 1, (name, headers)
    return got[0] if got else None


def preflight(origin: str, method: str = "POST", asked: str | None = "apikey, content-type") -> dict[str, str]:
    h = {"Origin": origin, "Access-Control-Request-Method": method}
    if asked is not None:
        h["Access-Control-Request-Headers"] = asked
    return h


def call(
    server: Server, method: str, target: str, body: bytes = b"", headers: dict[str, str] | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    """One request on its own connection, followed by a second on the same one: whatever the first got,
    the connection stays in step."""
    with Conn(server) as c:
        c.send(req(method, target, body, headers) + req("GET", "/api/v1/edge/open"))
        got = c.response()
        assert c.response()[0] == 200
    return got


def guest_saw(body: bytes) -> abi.Request:
    return abi.decode_request(body)


def error_of(body: bytes) -> str:
    return json.loads(body)["error"]


# --- preflights ---


@pytest.mark.parametrize("name", ["keyed", "jwtfn"])
def test_a_preflight_to_a_protected_function_with_cors_is_answered_before_auth(server: Server, name: str) -> None:
    for target in targets(name) + targets(name, "/functions/v1/"):
        status, headers, body = call(server, "OPTIONS", target, headers=preflight(APP))
        assert status == 204 and body == b"", (target, status, body)
        acao = one(headers, "access-control-allow-origin")
        if name == "keyed":
            assert acao == APP and "origin" in [v.lower() for v in values(headers, "vary")]
            assert one(headers, "access-control-max-age") == "600"
        else:
            assert acao == "*"
            assert one(headers, "access-control-max-age") == "86400"
        methods = {m.strip() for m in (one(headers, "access-control-allow-methods") or "").split(",")}
        assert {"GET", "POST", "PUT", "DELETE", "OPTIONS"} <= methods
        allowed = {h.strip() for h in (one(headers, "access-control-allow-headers") or "").split(",")}
        assert {"authorization", "apikey", "content-type", "x-client-info"} <= allowed
        assert one(headers, "access-control-allow-credentials") is None
        assert one(headers, "x-relay-error") is None  # a preflight answer is not an error
        assert one(headers, "www-authenticate") is None


def test_a_preflight_answers_with_the_configured_lists(server: Server) -> None:
    for target in targets("narrow"):
        status, headers, _ = call(server, "OPTIONS", target, headers=preflight(APP, "POST", "authorization"))
        assert status == 204
        assert one(headers, "access-control-allow-origin") == APP
        assert one(headers, "access-control-allow-methods") == "GET, POST"
        assert one(headers, "access-control-allow-headers") == "authorization, x-custom"
        assert one(headers, "access-control-max-age") == "0"


@pytest.mark.parametrize("name", ["protected", "jwtbare"])
def test_a_preflight_to_a_protected_function_without_cors_reaches_the_function(server: Server, name: str) -> None:
    for target in targets(name):
        status, headers, body = call(server, "OPTIONS", target, headers=preflight(APP))
        assert status == 200, (target, status, body)
        seen = guest_saw(body)  # the echo guest answered: the preflight met no auth
        assert seen.method == b"OPTIONS"
        assert (b"access-control-request-method", b"POST") in seen.headers
        assert (b"origin", APP.encode()) in seen.headers
        assert one(headers, "access-control-allow-origin") is None  # the function decides, not the server
        assert one(headers, "x-relay-error") is None


@pytest.mark.parametrize("name", ["protected", "keyed"])
def test_an_options_request_that_is_not_a_preflight_still_needs_credentials(server: Server, name: str) -> None:
    """Only a browser's preflight (Origin + Access-Control-Request-Method) skips auth."""
    for target in targets(name):
        for headers in ({}, {"Origin": APP}, {"Access-Control-Request-Method": "POST"}):
            status, _, body = call(server, "OPTIONS", target, headers=headers)
            assert status == 401 and error_of(body) == "missing_credentials", (target, headers)
        status, _, body = call(server, "OPTIONS", target, headers={"apikey": KEY})
        assert status == 200 and guest_saw(body).method == b"OPTIONS"


def test_a_disallowed_origin_gets_no_allow_origin(server: Server) -> None:
    for target in targets("keyed"):
        status, headers, body = call(server, "OPTIONS", target, headers=preflight(EVIL))
        assert status == 204 and body == b""
        assert not [k for k, _ in headers if k.startswith("access-control-")], headers
        status, headers, body = call(server, "POST", target, b"hi", {"Origin": EVIL, "apikey": KEY})
        assert status == 200 and guest_saw(body).body == b"hi"  # served: only the browser refuses to read it
        assert not [k for k, _ in headers if k.startswith("access-control-")], headers
        status, headers, _ = call(server, "POST", target, b"", {"Origin": EVIL})
        assert status == 401
        assert not [k for k, _ in headers if k.startswith("access-control-")], headers


def test_origins_compare_as_browsers_send_them(server: Server) -> None:
    """A configured origin in capitals, with its default port or a trailing slash, matches what a
    browser sends (scheme and host in lowercase, no default port)."""
    for target in targets("mixedcase"):
        status, headers, _ = call(server, "OPTIONS", target, headers=preflight(APP))
        assert status == 204 and one(headers, "access-control-allow-origin") == APP
        status, headers, _ = call(server, "GET", target, headers={"Origin": APP})
        assert status == 200 and one(headers, "access-control-allow-origin") == APP
        status, headers, _ = call(server, "GET", target, headers={"Origin": "https://app.example.com:8443"})
        assert one(headers, "access-control-allow-origin") is None


# --- the function's answers ---


def test_the_functions_answers_carry_allow_origin_and_expose_headers(server: Server) -> None:
    for origin in (APP, "http://127.0.0.1:5173"):
        for target in targets("keyed") + targets("keyed", "/functions/v1/"):
            status, headers, body = call(server, "POST", target, b"payload", {"Origin": origin, "apikey": KEY})
            assert status == 200 and guest_saw(body).body == b"payload"
            assert one(headers, "access-control-allow-origin") == origin
            assert "origin" in [v.lower() for v in values(headers, "vary")]
            assert {h.strip() for h in (one(headers, "access-control-expose-headers") or "").split(",")} >= {
                "x",
                "x-request-id",
            }
            assert one(headers, "x") == "1"  # the guest's own header is still there
            assert one(headers, "x-relay-error") is None
    for target in targets("jwtfn"):
        status, headers, _ = call(server, "GET", target, headers={"Origin": APP, "Authorization": "Bearer x.y.z"})
        assert status == 401 and one(headers, "access-control-allow-origin") == "*"


def test_no_origin_no_cors_headers(server: Server) -> None:
    for target in targets("keyed"):
        status, headers, _ = call(server, "POST", target, b"", {"apikey": KEY})
        assert status == 200
        assert not [k for k, _ in headers if k.startswith("access-control-")], headers


def test_a_guests_own_errors_carry_cors_but_are_not_relay_errors(server: Server) -> None:
    for name, status_wanted, text in (("teapot", 404, b"no such thing"), ("oops", 500, b"guest broke")):
        for target in targets(name) + targets(name, "/functions/v1/"):
            status, headers, body = call(server, "GET", target, headers={"Origin": APP})
            assert (status, body) == (status_wanted, text)
            assert one(headers, "x-relay-error") is None
            assert one(headers, "access-control-allow-origin") == APP
    for target in targets("oopsbare"):
        status, headers, body = call(server, "GET", target, headers={"Origin": APP})
        assert (status, body) == (500, b"guest broke")
        assert one(headers, "x-relay-error") is None
        assert one(headers, "access-control-allow-origin") is None  # no cors section: the guest's headers only


# --- the server's own errors ---

# (function with a cors section, the same without one, method, body, headers, status, code)
ERRORS = [
    ("keyed", "protected", "POST", b"", {}, 401, "missing_credentials"),
    ("keyed", "protected", "POST", b"", {"apikey": "w" * 24}, 401, "invalid_api_key"),
    ("jwtfn", "jwtbare", "POST", b"", {"Authorization": "Bearer not-a-jwt"}, 401, "invalid_token"),
    ("small", "smallbare", "POST", b"x" * 11, {}, 413, "payload_too_large"),
    ("limited", "limitedbare", "POST", b"", {}, 429, "rate_limited"),
    ("trap", "trapbare", "POST", b"", {}, 502, "trap"),
    ("spin", "spinbare", "POST", b"", {}, 504, "timeout"),
]


@pytest.mark.parametrize(
    "with_cors, without, method, body, headers, status, code", ERRORS, ids=[f"{e[5]}-{e[6]}" for e in ERRORS]
)
def test_the_servers_errors_are_readable_cross_origin_and_marked(
    server: Server,
    with_cors: str,
    without: str,
    method: str,
    body: bytes,
    headers: dict[str, str],
    status: int,
    code: str,
) -> None:
    if status == 429:  # use up each burst, on both adapters' shared limiter
        for name in (with_cors, without):
            assert call(server, "POST", f"/api/v1/edge/{name}")[0] in (200, 429)
    for name, acao in ((with_cors, APP if with_cors != "jwtfn" else "*"), (without, "*")):
        for target in targets(name) + targets(name, "/functions/v1/"):
            got_status, got, got_body = call(server, method, target, body, {**headers, "Origin": APP})
            assert got_status == status and error_of(got_body) == code, (target, got_status, got_body)
            assert one(got, "x-relay-error") == "true"
            assert one(got, "access-control-allow-origin") == acao, (target, got)
            exposed = {h.strip().lower() for h in (one(got, "access-control-expose-headers") or "").split(",")}
            assert "x-relay-error" in exposed, got  # else a browser's supabase-js can't read the mark
            if status == 429:
                assert "retry-after" in exposed and one(got, "retry-after")
            # without an Origin: still marked, no CORS headers
            got_status, got, _ = call(server, method, target, body, headers)
            assert got_status == status and one(got, "x-relay-error") == "true"
            assert not [k for k, _ in got if k.startswith("access-control-")], got


def test_a_missing_function_is_a_readable_relay_error(server: Server) -> None:
    for target in targets("nothing-here") + targets("nothing-here", "/functions/v1/"):
        status, headers, body = call(server, "POST", target, b"", {"Origin": APP})
        assert status == 404 and error_of(body) == "function_not_found"
        assert one(headers, "x-relay-error") == "true"
        assert one(headers, "access-control-allow-origin") == "*"
        # its preflight lets the browser through (not cached), so that the request reads the 404 above
        status, headers, body = call(server, "OPTIONS", target, headers=preflight(APP, "POST", "apikey, x-client-info"))
        assert status == 204 and body == b""
        assert one(headers, "access-control-allow-origin") == "*"
        assert one(headers, "access-control-allow-headers") == "apikey, x-client-info"
        assert "POST" in (one(headers, "access-control-allow-methods") or "")
        assert one(headers, "access-control-max-age") == "0"
        assert one(headers, "x-relay-error") is None


def test_admin_routes_are_not_opened_by_cors(server: Server) -> None:
    """CORS belongs to functions: the admin API gives a browser nothing to read."""
    status, headers, _ = exchange(server, req("GET", "/api/v1/edge", headers={"Origin": APP}))
    assert status == 401
    assert not [k for k, _ in headers if k.startswith("access-control-")], headers


# --- credentials mode ---


def test_credentials_mode_names_the_origin_and_never_a_wildcard(server: Server) -> None:
    for target in targets("creds"):
        status, headers, _ = call(server, "OPTIONS", target, headers=preflight(APP))
        assert status == 204
        assert one(headers, "access-control-allow-origin") == APP
        assert one(headers, "access-control-allow-credentials") == "true"
        assert "origin" in [v.lower() for v in values(headers, "vary")]
        status, headers, body = call(server, "POST", target, b"c", {"Origin": APP, "apikey": KEY})
        assert status == 200 and guest_saw(body).body == b"c"
        assert one(headers, "access-control-allow-origin") == APP
        assert one(headers, "access-control-allow-credentials") == "true"
        status, headers, _ = call(server, "POST", target, b"", {"Origin": APP})
        assert status == 401 and one(headers, "access-control-allow-origin") == APP
        assert one(headers, "access-control-allow-credentials") == "true"
        status, headers, _ = call(server, "OPTIONS", target, headers=preflight(EVIL))
        assert one(headers, "access-control-allow-origin") is None
        assert one(headers, "access-control-allow-credentials") is None


def test_credentials_mode_with_wildcards_lists_what_was_asked(server: Server) -> None:
    """With credentials, a browser reads "*" in allow-origin, allow-headers, allow-methods and
    expose-headers literally: the server names the origin, the headers and methods asked for, and
    the headers the response has."""
    for target in targets("credsany"):
        status, headers, _ = call(
            server, "OPTIONS", target, headers=preflight("http://localhost:3000", "PUT", "x-custom, content-type")
        )
        assert status == 204
        assert one(headers, "access-control-allow-origin") == "http://localhost:3000"
        assert one(headers, "access-control-allow-credentials") == "true"
        assert one(headers, "access-control-allow-headers") == "x-custom, content-type"
        methods = {m.strip() for m in (one(headers, "access-control-allow-methods") or "").split(",")}
        assert "*" not in methods and {"PUT", "DELETE", "PATCH"} <= methods
        status, headers, _ = call(server, "PUT", target, b"", {"Origin": "http://localhost:3000"})
        assert status == 200 and one(headers, "access-control-allow-origin") == "http://localhost:3000"
        exposed = {h.strip() for h in (one(headers, "access-control-expose-headers") or "").split(",")}
        assert "*" not in exposed and "x" in exposed


# --- the manifest ---

BAD_CORS = [
    {"allow_origins": []},
    {"allow_origins": "https://app.example.com"},
    {"allow_origins": ["app.example.com"]},
    {"allow_origins": ["https://app.example.com/path"]},
    {"allow_origins": ["ftp://app.example.com"]},
    {"allow_origins": ["https://app.example.com?q=1"]},
    {"allow_origins": ["null"]},
    {"allow_methods": ["GE T"]},
    {"allow_methods": "GET"},
    {"allow_headers": ["content type"]},
    {"allow_headers": ["x-a\r\nx-b"]},
    {"expose_headers": ["x:y"]},
    {"max_age": -1},
    {"max_age": 86400 * 8},
    {"max_age": "600"},
    {"allow_credentials": "yes"},
    {"allow_origin": ["*"]},  # misspelt: unknown fields are refused
]


@pytest.mark.parametrize("cors", BAD_CORS, ids=[json.dumps(c)[:40] for c in BAD_CORS])
def test_bad_cors_values_are_an_invalid_manifest(server: Server, cors: dict[str, Any]) -> None:
    r = server.deploy("badcors", wat(ECHO_WAT), json.dumps({"cors": cors}))
    assert r.status_code == 422, r.text
    err = r.json()
    assert err["error"] == "invalid_manifest" and "cors" in err["message"], err
    with server.client() as c:
        assert c.get("/api/v1/edge/badcors").status_code == 404  # nothing was deployed


def test_a_cors_section_shows_in_the_listing(server: Server) -> None:
    with server.client() as c:
        r = c.get("/api/v1/edge", headers=server.admin)
    assert r.status_code == 200
    listed = {f["function"]: f for f in r.json()["functions"]}
    cors = json.dumps(listed["keyed"])
    assert APP in cors and "600" in cors


def test_a_preflight_never_meets_the_rate_limit(server: Server) -> None:
    call(server, "POST", "/api/v1/edge/limited")  # the burst is used up (if it was not already)
    for target in targets("limited"):
        assert call(server, "POST", target)[0] == 429
        status, headers, _ = call(server, "OPTIONS", target, headers=preflight(APP))
        assert status == 204 and one(headers, "access-control-allow-origin") == APP
