"""Outbound fetch through the whole stack: a real server, a WAT guest driving the host calls, a real
upstream on loopback. (hive.outbound's own tests cover every SSRF form and limit in depth.)"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.guests import const_wat, wat
from tests.io.guests import SPAM, Result, fetch, io_guest, program, results
from tests.operations.test_metrics_logs import sample
from tests.security.common import assert_error, fresh, function_log
from tests.support import Server, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("fetch") / "data", workers=1)
    grant = {"allowed_hosts": [upstream]}
    deploys = {
        "fetcher": grant,
        "nogrant": {},
        "quick": {**grant, "limits": {"timeout_ms": 30}},  # 30 ms of guest time; its upstream takes 300
        "walled": {**grant, "limits": {"wall_timeout_ms": 300}},
        "budget": {**grant, "limits": {"fetch": {"max_requests": 3, "max_concurrent": 2, "max_response_bytes": 1000}}},
        "narrow": {**grant, "limits": {"max_concurrency": 2, "max_queue": 1}},
        "wide": {**grant, "limits": {"max_concurrency": 256, "max_queue": 256}},
    }
    for name, manifest in deploys.items():
        r = s.deploy(name, io_guest(), json.dumps(manifest))
        assert r.status_code == 201, r.text
    assert s.deploy("hello", wat(const_wat("hello"))).status_code == 201
    assert (
        s.deploy("spam", wat(SPAM), json.dumps({**grant, "kv": ["default"], "limits": {"timeout_ms": 200}})).status_code
        == 201
    )
    yield s
    s.stop()


def run(server: Server, name: str, *steps: tuple) -> list[Result | int]:
    r = fresh(server, "POST", f"/api/v1/edge/{name}", content=program(*steps))
    assert r.status_code == 200, r.text
    return results(r.content)


def test_a_granted_fetch_returns_the_upstream_response(server: Server, upstream: str) -> None:
    (res,) = run(server, "fetcher", ("fetch", fetch(f"{upstream}/json")))
    assert isinstance(res, Result)
    resp = res.response()
    assert resp.status == 200 and json.loads(resp.body)["rate"] == 1.08
    assert (b"content-type", b"application/json") in resp.headers


def test_method_headers_and_body_reach_the_upstream(server: Server, upstream: str) -> None:
    (res,) = run(
        server,
        "fetcher",
        (
            "fetch",
            fetch(f"{upstream}/echo", "POST", [("x-key", "k1"), ("content-type", "text/plain")], b"hello upstream"),
        ),
    )
    doc = json.loads(res.response().body)  # type: ignore[union-attr]
    assert doc["method"] == "POST" and doc["body"] == "hello upstream" and doc["headers"]["x-key"] == "k1"


@pytest.mark.parametrize(
    "url, code",
    [
        ("http://127.0.0.1:9/x", "host_not_allowed"),  # the same IP, another port
        ("http://169.254.169.254/latest/meta-data/", "host_not_allowed"),
        ("http://localhost:{port}/json", "host_not_allowed"),  # a name for the granted IP is not the grant
        ("http://2852039166/", "host_not_allowed"),  # 169.254.169.254 in decimal
        ("http://0251.0376.0251.0376/", "host_not_allowed"),  # ... and in octal
        ("ftp://127.0.0.1/x", "bad_url"),
    ],
)
def test_refused_fetches_are_error_values_not_traps(server: Server, upstream: str, url: str, code: str) -> None:
    port = upstream.rsplit(":", 1)[1]
    (res,) = run(server, "fetcher", ("fetch", fetch(url.format(port=port))))
    assert isinstance(res, Result) and res.kind == 1, res
    assert res.code in (code, "address_not_allowed"), (res.code, res.message)
    assert res.message


def test_no_grant_no_fetch(server: Server, upstream: str) -> None:
    (res,) = run(server, "nogrant", ("fetch", fetch(f"{upstream}/json")))
    assert isinstance(res, Result) and res.code == "host_not_allowed" and "allowed_hosts" in res.message


def test_a_redirect_to_an_ungranted_host_is_refused(server: Server, upstream: str) -> None:
    (res,) = run(server, "fetcher", ("fetch", fetch(f"{upstream}/redirect?to=http://169.254.169.254/")))
    assert isinstance(res, Result) and res.kind == 1 and res.code in ("host_not_allowed", "address_not_allowed")


def test_waiting_does_not_count_against_the_time_limit(server: Server, upstream: str) -> None:
    (res,) = run(server, "quick", ("fetch", fetch(f"{upstream}/slow?ms=300")))
    assert isinstance(res, Result) and res.response().body == b"slow"


def test_the_wall_clock_limit_bounds_the_whole_invocation(server: Server, upstream: str) -> None:
    r = fresh(server, "POST", "/api/v1/edge/walled", content=program(("fetch", fetch(f"{upstream}/slow?ms=2000"))))
    assert_error(r, 504, "wall_timeout")
    (res,) = run(server, "walled", ("fetch", fetch(f"{upstream}/json")))  # a fresh instance serves next
    assert isinstance(res, Result) and res.response().status == 200


def test_per_invocation_limits_give_error_values(server: Server, upstream: str) -> None:
    # A slow upstream: the first two are still in flight when the third starts (with a quick one, the
    # first could finish first, and the third would rightly be let through).
    out = run(server, "budget", ("fetch", fetch(f"{upstream}/slow?ms=300"), 5))
    codes = [r.code if isinstance(r, Result) else r for r in out]
    # 2 at once (max_concurrent), the third refused for that, then the rest past 3 requests in all:
    # every call counts, a refused one too
    assert codes == [None, None, "too_many_concurrent", "too_many_requests", "too_many_requests"], codes
    out = run(server, "budget", ("fetch", fetch(f"{upstream}/big?n=5000")))
    assert isinstance(out[0], Result) and out[0].code == "response_too_large"


def test_several_fetches_run_concurrently(server: Server, upstream: str) -> None:
    started = time.monotonic()
    out = run(server, "fetcher", ("fetch", fetch(f"{upstream}/slow?ms=400"), 5))
    took = time.monotonic() - started
    assert [r.response().body for r in out] == [b"slow"] * 5  # type: ignore[union-attr]
    print(f"5 fetches of a 400 ms upstream in one invocation: {took * 1000:.0f} ms")


def test_outbound_calls_are_logged_and_counted(server: Server, upstream: str) -> None:
    run(server, "fetcher", ("fetch", fetch(f"{upstream}/fail")))
    run(server, "fetcher", ("fetch", fetch("http://169.254.169.254/")))
    lines = [r for r in function_log(server, "fetcher") if r.get("kind") == "outbound"]
    assert any(r["status"] == 500 and r["host"] == "127.0.0.1" and r["bytes_in"] > 0 for r in lines), lines
    assert any(r.get("error") in ("host_not_allowed", "address_not_allowed") for r in lines), lines
    text = fresh(server, "GET", "/metrics", headers=server.admin).text
    assert sample(text, "hive_outbound_requests_total", function="fetcher", host="127.0.0.1", status="500") >= 1
    assert sample(text, "hive_outbound_duration_seconds_count", function="fetcher") >= 1


def test_overload_is_a_clear_503_never_a_crash(server: Server, upstream: str) -> None:
    body = program(("fetch", fetch(f"{upstream}/slow?ms=500")))
    statuses: list[int] = []
    bodies: list[bytes] = []

    def one() -> None:
        r = fresh(server, "POST", "/api/v1/edge/narrow", content=body)
        statuses.append(r.status_code)
        bodies.append(r.content)
        if r.status_code == 503:
            assert r.headers["retry-after"] == "1" and r.json()["error"] == "overloaded"

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(set(statuses)) == [200, 503] and statuses.count(200) >= 3, statuses  # 2 running + 1 queued


def test_a_waiting_function_never_stalls_its_worker(server: Server, upstream: str) -> None:
    """256 invocations wait 200 ms on their upstream at once, on one worker; hello answers meanwhile."""
    body = program(("fetch", fetch(f"{upstream}/slow?ms=200")))
    hello_ms: list[float] = []
    done = threading.Event()

    def hello() -> None:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            while not done.is_set() and len(hello_ms) < 10_000:
                t = time.monotonic()
                assert c.post("/api/v1/edge/hello").text == "hello"
                hello_ms.append((time.monotonic() - t) * 1000)

    async def one() -> int:
        # a plain socket per request: a Python HTTP client would itself take seconds for 256 at once
        host, port = server.url.removeprefix("http://").split(":")
        r, w = await asyncio.open_connection(host, int(port))
        w.write(
            b"POST /api/v1/edge/wide HTTP/1.1\r\nhost: t\r\nconnection: close\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )
        data = await r.read()
        w.close()
        return int(data.split(b" ", 2)[1])

    async def burst() -> list[int]:
        return list(await asyncio.gather(*[one() for _ in range(256)]))

    pinger = threading.Thread(target=hello)
    pinger.start()
    started = time.monotonic()
    try:
        statuses = asyncio.run(burst())
    finally:
        took = time.monotonic() - started
        done.set()
        pinger.join(30)
    assert statuses == [200] * 256
    assert hello_ms, "hello was never answered during the burst"
    hello_ms.sort()
    print(
        f"256 x 200 ms upstream on one worker: {took * 1000:.0f} ms; hello during it: {len(hello_ms)} calls, "
        f"p50 {hello_ms[len(hello_ms) // 2]:.1f} ms, max {hello_ms[-1]:.1f} ms"
    )


def test_a_guest_that_spams_host_calls_is_bounded(server: Server) -> None:
    r = fresh(server, "POST", "/api/v1/edge/spam")
    assert_error(r, 504, "timeout")
    assert fresh(server, "POST", "/api/v1/edge/hello").text == "hello"
    assert fresh(server, "GET", "/healthz").status_code == 200
