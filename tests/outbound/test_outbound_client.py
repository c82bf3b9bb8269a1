"""The client as a whole: pools isolated per function and rules, owned headers, records, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from hive.outbound import FetchBudget, FetchLimits, FetchRecord, FetchRefused, FetchRequest, Outbound
from tests.outbound.common import Dns, Upstream, afetch, echoed, fetch, rules, run, wait_until


def test_a_pooled_connection_never_serves_a_function_with_other_rules(upstream: Upstream) -> None:
    """Function a may reach svc.test's loopback address; b may reach the name only.

    a's keep-alive connection to svc.test is open when b fetches the same URL: b must be refused,
    not handed a's connection.
    """
    port = upstream.port
    dns = Dns({"svc.test": ["127.0.0.1"]})
    url = f"http://svc.test:{port}/echo"
    rules_a = rules(f"http://svc.test:{port}", upstream.origin)
    rules_b = rules(f"http://svc.test:{port}")

    async def go() -> list[str]:
        ob = Outbound(resolver=dns)
        outcomes = []
        try:
            for function, allowed in (("a", rules_a), ("b", rules_b), ("a", rules_a), ("b", rules_b)):
                try:
                    response = await afetch(ob, allowed, url, function=function)
                    outcomes.append(f"{function}:{response.status}")
                except FetchRefused as e:
                    outcomes.append(f"{function}:{e.code}")
            return outcomes
        finally:
            await ob.aclose()

    assert run(go()) == ["a:200", "b:address_not_allowed", "a:200", "b:address_not_allowed"]
    assert len(upstream.requests) == 2 and len(upstream.connections) == 1  # a reused its own connection
    assert dns.calls == ["svc.test", "svc.test", "svc.test"]  # a once, b on each try


def test_narrowing_a_functions_rules_drops_its_pooled_connections(upstream: Upstream) -> None:
    """A redeploy that removes the IP grant: the same function, its live connection, still refused."""
    port = upstream.port
    dns = Dns({"svc.test": ["127.0.0.1"]})
    url = f"http://svc.test:{port}/echo"

    async def go() -> list[str]:
        ob = Outbound(resolver=dns)
        outcomes = []
        try:
            for allowed in (rules(f"http://svc.test:{port}", upstream.origin), rules(f"http://svc.test:{port}")):
                try:
                    outcomes.append(str((await afetch(ob, allowed, url, function="f")).status))
                except FetchRefused as e:
                    outcomes.append(e.code)
            return outcomes
        finally:
            await ob.aclose()

    assert run(go()) == ["200", "address_not_allowed"]


def test_connections_are_pooled_per_function(upstream: Upstream) -> None:
    allowed = rules(upstream.origin)

    async def go() -> None:
        ob = Outbound()
        try:
            for function in ("a", "a", "a", "c", "c"):
                assert (await afetch(ob, allowed, upstream.url("/echo"), function=function)).status == 200
        finally:
            await ob.aclose()

    run(go())
    assert len(upstream.requests) == 5
    assert len(upstream.connections) == 2  # one kept-alive connection each for a and c


def test_guest_cannot_set_host_or_framing_headers(upstream: Upstream) -> None:
    sent = [
        ("Host", "evil.test"),
        ("Connection", "x-secret-hop, close"),
        ("X-Secret-Hop", "1"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Length", "999"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authorization", "Basic eA=="),
        ("Expect", "100-continue"),
        ("X-Normal", " kept "),
    ]
    seen = echoed(fetch(rules(upstream.origin), upstream.url("/echo"), method="POST", body=b"abc", headers=sent))
    headers = dict(seen["headers"])
    assert headers["host"] == f"127.0.0.1:{upstream.port}"
    assert headers["content-length"] == "3" and seen["body"] == "abc"
    assert headers["x-normal"] == "kept" and headers["user-agent"] == "edge-hive"
    for name in (
        "connection",
        "x-secret-hop",
        "transfer-encoding",
        "te",
        "upgrade",
        "keep-alive",
        "proxy-authorization",
        "expect",
    ):
        assert name not in headers, name


def test_guest_user_agent_and_repeated_headers_are_kept(upstream: Upstream) -> None:
    seen = echoed(
        fetch(
            rules(upstream.origin),
            upstream.url("/echo"),
            headers=[("User-Agent", "mine/1"), ("X-Many", "1"), ("X-Many", "2")],
        )
    )
    assert ("user-agent", "mine/1") in seen["headers"]
    assert [v for k, v in seen["headers"] if k == "x-many"] == ["1", "2"]


def test_response_headers_without_hop_by_hop(upstream: Upstream) -> None:
    response = fetch(rules(upstream.origin), upstream.url("/close"))
    names = [n for n, _ in response.headers]
    assert "connection" not in names and ("content-length", "7") in response.headers
    assert all(n == n.lower() for n in names)
    assert response.body == b"closing" and response.url == upstream.url("/close")


def test_on_complete_gets_one_record_per_hop_and_per_refusal(upstream: Upstream) -> None:
    seen: list[FetchRecord] = []

    async def go() -> None:
        ob = Outbound(on_complete=seen.append)
        try:
            await afetch(
                ob, rules(upstream.origin), upstream.url("/chain/1"), function="fn", method="post", body=b"12345"
            )
            with pytest.raises(FetchRefused):
                await afetch(ob, rules(upstream.origin), "https://elsewhere.example/", function="fn")
        finally:
            await ob.aclose()

    run(go())
    first, second, refusal = seen
    assert (first.function, first.method, first.host, first.status, first.code) == (
        "fn",
        "POST",
        "127.0.0.1",
        302,
        None,
    )
    assert first.rule == upstream.origin and first.address == "127.0.0.1" and first.bytes_out == 5
    assert (second.method, second.status, second.bytes_out, second.bytes_in) == ("GET", 200, 0, len(b"end of chain"))
    assert first.ms >= 0 and second.ms >= 0
    assert (refusal.host, refusal.status, refusal.code, refusal.rule) == (
        "elsewhere.example",
        None,
        "host_not_allowed",
        None,
    )


def test_a_cancelled_fetch_gives_back_its_slot(upstream: Upstream) -> None:
    """The invocation's wall clock cancels a waiting fetch: the budget and pool are left usable."""
    allowed = rules(upstream.origin)

    async def go() -> tuple[int, int]:
        ob, budget = Outbound(), FetchBudget()
        try:
            task = asyncio.ensure_future(
                afetch(ob, allowed, upstream.url("/hold"), budget=budget, limits=FetchLimits(max_concurrent=1))
            )
            await asyncio.to_thread(wait_until, lambda: upstream.holding == 1, "the fetch to be in flight")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            in_flight = budget.in_flight
            status = (
                await afetch(ob, allowed, upstream.url("/echo"), budget=budget, limits=FetchLimits(max_concurrent=1))
            ).status
            return in_flight, status
        finally:
            upstream.release.set()
            await ob.aclose()

    assert run(go()) == (0, 200)


def test_many_fetches_wait_together_on_one_loop(upstream: Upstream) -> None:
    """Forty invocations each waiting on a slow upstream, concurrently, on one event loop."""
    allowed = rules(upstream.origin)

    async def go() -> list[int]:
        ob = Outbound()
        try:
            holders = [
                asyncio.ensure_future(afetch(ob, allowed, upstream.url("/hold"), function="slow")) for _ in range(40)
            ]
            await asyncio.to_thread(wait_until, lambda: upstream.holding == 40, "all forty in flight at once")
            upstream.release.set()
            return [r.status for r in await asyncio.gather(*holders)]
        finally:
            await ob.aclose()

    assert run(go()) == [200] * 40


def test_works_on_the_default_asyncio_loop_too(upstream: Upstream) -> None:
    async def go() -> int:
        ob = Outbound()
        try:
            response = await ob.fetch(
                "f", rules(upstream.origin), FetchRequest("GET", upstream.url("/echo")), FetchLimits(), FetchBudget()
            )
            return response.status
        finally:
            await ob.aclose()

    assert asyncio.run(go()) == 200


def test_forget_closes_a_deleted_functions_pool(upstream: Upstream) -> None:
    allowed = rules(upstream.origin)

    async def go() -> None:
        ob = Outbound()
        try:
            await afetch(ob, allowed, upstream.url("/echo"), function="gone")
            await ob.forget("gone")
            await afetch(ob, allowed, upstream.url("/echo"), function="gone")  # a fresh pool
        finally:
            await ob.aclose()

    run(go())
    assert len(upstream.connections) == 2


def test_idle_pools_are_closed_after_the_keepalive_expiry(upstream: Upstream) -> None:
    """A function that stops fetching does not keep its sockets: later fetches by others sweep its pool."""
    allowed = rules(upstream.origin)

    async def go() -> tuple[bool, bool]:
        ob = Outbound(keepalive_expiry_s=0.2)
        try:
            await afetch(ob, allowed, upstream.url("/echo"), function="quiet")
            quiet = tuple(upstream.requests[0]["peer"])
            open_after_fetch = quiet not in upstream.closed
            for _ in range(200):  # bounded: until the sweep has run and closed quiet's pool
                await afetch(ob, allowed, upstream.url("/echo"), function="busy")
                if quiet in upstream.closed:
                    return open_after_fetch, True
                await asyncio.sleep(0.05)
            return open_after_fetch, False
        finally:
            await ob.aclose()

    assert run(go()) == (True, True)
