"""Every fetch limit and failure, against real loopback upstreams; each gives its stable code."""

from __future__ import annotations

import asyncio

import pytest

from hive.errors import HiveError
from hive.outbound import CODES, FetchBudget, FetchLimits, FetchRefused, Outbound
from tests.outbound.common import (
    Dns,
    SilentListener,
    Upstream,
    afetch,
    closed_port,
    echoed,
    fetch,
    refused,
    rules,
    run,
    wait_until,
)


def test_refusals_are_values_not_hive_errors() -> None:
    assert not issubclass(FetchRefused, HiveError)
    assert set(CODES) == {
        "bad_url",
        "bad_request",
        "host_not_allowed",
        "address_not_allowed",
        "dns_failed",
        "too_many_requests",
        "too_many_concurrent",
        "request_too_large",
        "response_too_large",
        "connect_timeout",
        "timeout",
        "connect_failed",
        "tls_error",
        "protocol_error",
        "too_many_redirects",
    }


def test_defaults() -> None:
    assert FetchLimits() == FetchLimits(
        max_requests=50,
        max_concurrent=6,
        connect_timeout_ms=5000,
        timeout_ms=30000,
        max_response_bytes=10 * 1024 * 1024,
        max_request_bytes=6 * 1024 * 1024,
    )


def test_max_requests_per_invocation(upstream: Upstream) -> None:
    limits = FetchLimits(max_requests=3)

    async def go() -> tuple[list[int], FetchRefused, int]:
        ob, budget = Outbound(), FetchBudget()
        try:
            statuses = [
                (await afetch(ob, rules(upstream.origin), upstream.url("/echo"), limits=limits, budget=budget)).status
                for _ in range(3)
            ]
            with pytest.raises(FetchRefused) as info:
                await afetch(ob, rules(upstream.origin), upstream.url("/echo"), limits=limits, budget=budget)
            # A new invocation has a new budget.
            fresh = (await afetch(ob, rules(upstream.origin), upstream.url("/echo"), limits=limits)).status
            return statuses, info.value, fresh
        finally:
            await ob.aclose()

    statuses, e, fresh = run(go())
    assert statuses == [200, 200, 200] and fresh == 200
    assert e.code == "too_many_requests" and "3 fetch requests" in e.message and "max_requests" in e.message
    assert len(upstream.requests) == 4


def test_refused_calls_count_too() -> None:
    """A guest that spams refused fetches runs out like any other: each call takes a request."""

    async def go() -> list[str]:
        ob, budget, codes = Outbound(), FetchBudget(), []
        try:
            for _ in range(4):
                try:
                    await afetch(
                        ob,
                        rules("https://a.example"),
                        "https://b.example/",
                        budget=budget,
                        limits=FetchLimits(max_requests=3),
                    )
                except FetchRefused as e:
                    codes.append(e.code)
            return codes
        finally:
            await ob.aclose()

    assert run(go()) == ["host_not_allowed"] * 3 + ["too_many_requests"]


def test_max_concurrent_per_invocation(upstream: Upstream) -> None:
    limits = FetchLimits(max_concurrent=2)
    allowed = rules(upstream.origin)

    async def go() -> tuple[list[object], FetchRefused, int]:
        ob, budget = Outbound(), FetchBudget()
        try:
            holders = [
                asyncio.ensure_future(afetch(ob, allowed, upstream.url("/hold"), limits=limits, budget=budget))
                for _ in range(2)
            ]
            await asyncio.to_thread(wait_until, lambda: upstream.holding == 2, "two fetches in flight")
            with pytest.raises(FetchRefused) as info:
                await afetch(ob, allowed, upstream.url("/echo"), limits=limits, budget=budget)
            in_flight = budget.in_flight
            upstream.release.set()
            results = [r.status for r in await asyncio.gather(*holders)]
            # Slots are given back: a third fetch now goes through.
            results.append((await afetch(ob, allowed, upstream.url("/echo"), limits=limits, budget=budget)).status)
            assert budget.in_flight == 0
            return results, info.value, in_flight
        finally:
            await ob.aclose()

    results, e, in_flight = run(go())
    assert results == [200, 200, 200] and in_flight == 2
    assert e.code == "too_many_concurrent" and "max_concurrent" in e.message
    assert [r["path"] for r in upstream.requests].count("/echo") == 1


def test_request_too_large(upstream: Upstream) -> None:
    limits = FetchLimits(max_request_bytes=1000)
    e = refused(rules(upstream.origin), upstream.url("/echo"), method="POST", body=b"x" * 1001, limits=limits)
    assert e.code == "request_too_large" and "1001 bytes" in e.message and "max_request_bytes" in e.message
    assert upstream.requests == []
    seen = echoed(fetch(rules(upstream.origin), upstream.url("/echo"), method="POST", body=b"y" * 1000, limits=limits))
    assert seen["body"] == "y" * 1000 and ("content-length", "1000") in seen["headers"]


def test_too_many_or_too_large_request_headers(upstream: Upstream) -> None:
    many = [(f"x-h{i}", "v") for i in range(101)]
    assert refused(rules(upstream.origin), upstream.url("/echo"), headers=many).code == "request_too_large"
    huge = [("x-big", "v" * 70000)]
    assert refused(rules(upstream.origin), upstream.url("/echo"), headers=huge).code == "request_too_large"
    assert upstream.requests == []


@pytest.mark.parametrize("chunked", [False, True])
def test_response_too_large_stops_reading(upstream: Upstream, chunked: bool) -> None:
    limits = FetchLimits(max_response_bytes=100_000)
    flag = "&chunked=1" if chunked else ""
    e = refused(rules(upstream.origin), upstream.url(f"/large?n=5000000{flag}"), limits=limits)
    assert e.code == "response_too_large" and "100000 bytes" in e.message and "max_response_bytes" in e.message
    assert e.records[-1].code == "response_too_large"
    ok = fetch(rules(upstream.origin), upstream.url(f"/large?n=100000{flag}"), limits=limits)
    assert ok.status == 200 and ok.body == b"x" * 100_000


def test_large_body_under_the_default_limit(upstream: Upstream) -> None:
    response = fetch(rules(upstream.origin), upstream.url("/large?n=3000000&chunked=1"))
    assert len(response.body) == 3_000_000 and response.records[0].bytes_in == 3_000_000


def test_total_timeout_waiting_for_headers(upstream: Upstream) -> None:
    e = refused(rules(upstream.origin), upstream.url("/slow?ms=10000"), limits=FetchLimits(timeout_ms=300))
    assert e.code == "timeout" and "300 ms" in e.message


def test_total_timeout_covers_a_trickling_body(upstream: Upstream) -> None:
    """Each byte arrives well within any read timeout; the whole body does not arrive within timeout_ms."""
    e = refused(rules(upstream.origin), upstream.url("/trickle"), limits=FetchLimits(timeout_ms=400))
    assert e.code == "timeout"


def test_connect_timeout_on_a_handshake_that_never_completes() -> None:
    silent = SilentListener()
    try:
        origin = f"https://127.0.0.1:{silent.port}"
        e = refused(rules(origin), origin + "/", limits=FetchLimits(connect_timeout_ms=300))
        assert e.code == "connect_timeout" and "connect_timeout_ms" in e.message
    finally:
        silent.close()


def test_connect_timeout_covers_a_slow_resolver() -> None:
    dns = Dns({"slow.test": ["127.0.0.1"]}, delay_s=5)
    e = refused(
        rules("http://slow.test"), "http://slow.test/", resolver=dns, limits=FetchLimits(connect_timeout_ms=200)
    )
    assert e.code == "connect_timeout" and "slow.test" in e.message


def test_connect_failed() -> None:
    origin = f"http://127.0.0.1:{closed_port()}"
    e = refused(rules(origin), origin + "/")
    assert e.code == "connect_failed" and origin in e.message


def test_upstream_500_is_a_response_not_a_refusal(upstream: Upstream) -> None:
    response = fetch(rules(upstream.origin), upstream.url("/status/500"))
    assert response.status == 500 and response.body == b"status /status/500"
    assert response.records[0].status == 500 and response.records[0].code is None


def test_upstream_closing_mid_body_is_a_protocol_error(upstream: Upstream) -> None:
    e = refused(rules(upstream.origin), upstream.url("/close-early"))
    assert e.code == "protocol_error"


def test_upstream_speaking_garbage_is_a_protocol_error(upstream: Upstream) -> None:
    assert refused(rules(upstream.origin), upstream.url("/garbage")).code == "protocol_error"


@pytest.mark.parametrize(
    "method, headers",
    [
        ("GE T", []),
        ("", []),
        ("CONNECT", []),
        ("GET\n", []),
        ("GET", [("bad name", "v")]),
        ("GET", [("x-h", "a\r\nInjected: 1")]),
        ("GET", [("x-h", "a\x00")]),
        ("GET", [("", "v")]),
    ],
)
def test_bad_requests(upstream: Upstream, method: str, headers: list[tuple[str, str]]) -> None:
    e = refused(rules(upstream.origin), upstream.url("/echo"), method=method, headers=headers)
    assert e.code == "bad_request"
    assert upstream.requests == []


def test_budget_counts_bytes(upstream: Upstream) -> None:
    async def go() -> FetchBudget:
        ob, budget = Outbound(), FetchBudget()
        try:
            await afetch(
                ob, rules(upstream.origin), upstream.url("/large?n=1234"), method="POST", body=b"abc", budget=budget
            )
            return budget
        finally:
            await ob.aclose()

    budget = run(go())
    assert (budget.requests, budget.bytes_out, budget.bytes_in, budget.in_flight) == (1, 3, 1234, 0)
