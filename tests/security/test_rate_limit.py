"""Server-wide rate limits on a real server with 4 workers.

A burst of 400 requests on fresh connections spreads over the workers; the token bucket lives in a
shared LMDB environment, so the number allowed is the one bucket's (burst + rps x elapsed), not four
buckets' worth. The rest are 429 with Retry-After, the guest never runs for them, and the bucket
refills. Buckets are per function, and unauthenticated requests don't spend them.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.security.common import (
    assert_error,
    check_registry,
    counting_guest,
    function_log,
    invoke,
    poll,
)
from tests.support import Server, start_server

pytestmark = pytest.mark.slow

WORKERS = 4
RPS, BURST = 100, 100
TOTAL, THREADS = 400, 16
KEY = "rate-limit-test-key-0123456789"
MARKER = b"limited-guest-ran"

# Logs a marker on each call (so the function log shows exactly which requests ran it).
GUEST = counting_guest(MARKER)

FUNCTIONS = {
    "limited": {"rate_limit": {"rps": RPS, "burst": BURST}},
    "neighbour": {"rate_limit": {"rps": RPS, "burst": BURST}},
    "open": {},
    "slow": {"rate_limit": {"rps": 0.2, "burst": 2}},
    "slow-twin": {"rate_limit": {"rps": 0.2, "burst": 2}},
    "guarded": {"rate_limit": {"rps": 0.2, "burst": 2}, "auth": {"mode": "api_key", "api_keys": [KEY]}},
}


@dataclass
class Sent:
    request_id: str
    sent: float
    done: float
    status: int
    retry_after: str | None
    body: bytes


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("ratelimit") / "data", workers=WORKERS)
    try:
        for name, manifest in FUNCTIONS.items():
            r = s.deploy(name, GUEST, json.dumps(manifest))
            assert r.status_code == 201, r.text
        yield s
        check_registry(s, dict.fromkeys(FUNCTIONS, 1))
    finally:
        s.stop()


def burst(server: Server, name: str, total: int, threads: int) -> list[Sent]:
    """`total` requests as fast as `threads` threads can send them, each on a new connection."""
    host, port = "127.0.0.1", int(server.url.rsplit(":", 1)[1])
    results: list[Sent] = []
    lock = threading.Lock()
    next_index = iter(range(total))
    start = threading.Barrier(threads)
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait(timeout=30)
            while True:
                with lock:
                    if next(next_index, None) is None:
                        return
                rid = uuid.uuid4().hex
                conn = http.client.HTTPConnection(host, port, timeout=30)
                try:
                    sent = time.monotonic()
                    conn.request(
                        "POST", f"/api/v1/edge/{name}", body=b"", headers={"x-request-id": rid, "connection": "close"}
                    )
                    resp = conn.getresponse()
                    body = resp.read()
                    done = time.monotonic()
                finally:
                    conn.close()
                with lock:
                    results.append(Sent(rid, sent, done, resp.status, resp.getheader("retry-after"), body))
        except BaseException as e:  # reported by the caller
            errors.append(e)

    pool = [threading.Thread(target=run) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(timeout=120)
    assert not errors, errors[:3]
    assert len(results) == total
    return results


def test_a_burst_is_limited_server_wide(server: Server) -> None:
    results = burst(server, "limited", TOTAL, THREADS)
    allowed = [r for r in results if r.status == 200]
    limited = [r for r in results if r.status == 429]
    assert len(allowed) + len(limited) == TOTAL, {r.status for r in results}

    # The bucket starts full at the first request and refills at RPS; bound the time the server
    # spent taking tokens by what the client saw.
    min_send, max_send = min(r.sent for r in results), max(r.sent for r in results)
    min_done, max_done = min(r.done for r in results), max(r.done for r in results)
    low = BURST + RPS * max(0.0, max_send - min_done)
    high = BURST + RPS * (max_done - min_send)
    assert 0.9 * low <= len(allowed) <= 1.1 * high, (len(allowed), low, high)
    assert limited, f"all {TOTAL} passed in {max_done - min_send:.2f} s: the burst was too slow to test anything"

    for r in limited:
        body = json.loads(r.body)
        assert body["error"] == "rate_limited" and body["message"]
        assert r.retry_after is not None and int(r.retry_after) >= 1

    # The requests spread over the workers (the function log says which worker served which).
    # (Refused requests are logged without their request id, so count those by status.)
    log = [rec for rec in function_log(server, "limited") if rec["kind"] == "invocation"]
    records = {rec["request_id"]: rec for rec in log if rec["request_id"]}
    pids = {records[r.request_id]["pid"] for r in allowed}
    assert len(pids) >= 3, pids
    assert {rec["pid"] for rec in log} <= server.worker_pids()
    assert sum(1 for rec in log if rec["status"] == 429 and rec["error"] == "rate_limited") == len(limited)
    # The guest ran once for each allowed request and never for a limited one.
    ran = [rec for rec in function_log(server, "limited") if rec["kind"] == "output"]
    assert len(ran) == len(allowed)
    assert {rec["request_id"] for rec in ran} == {r.request_id for r in allowed}

    # Other functions are unaffected: their buckets are their own.
    for _ in range(10):
        assert invoke(server, "neighbour").status_code == 200
        assert invoke(server, "open").status_code == 200

    # The bucket refills: poll until a request passes, then a steady trickle below RPS passes.
    poll(lambda: invoke(server, "limited").status_code == 200, timeout=30, interval=0.05, what="the bucket to refill")
    for _ in range(20):
        r = invoke(server, "limited")
        assert r.status_code == 200, r.text
        time.sleep(0.02)  # pacing at under RPS, not a wait for an event


def test_rate_limits_are_per_function(server: Server) -> None:
    got = [invoke(server, "slow") for _ in range(3)]
    assert [r.status_code for r in got] == [200, 200, 429]
    assert_error(got[2], 429, "rate_limited")
    assert int(got[2].headers["retry-after"]) >= 1
    # The same limits on another function: a bucket of its own.
    assert [invoke(server, "slow-twin").status_code for _ in range(2)] == [200, 200]
    assert invoke(server, "slow").status_code == 429  # still empty
    assert invoke(server, "open").status_code == 200


def test_unauthenticated_requests_do_not_spend_the_budget(server: Server) -> None:
    """Auth runs before the rate limit, so a client without the key can't lock out the ones with it."""
    for _ in range(10):
        assert_error(
            invoke(server, "guarded", headers={"apikey": "wrong-key-0123456789abcdef"}), 401, "invalid_api_key"
        )
        assert_error(invoke(server, "guarded"), 401, "missing_credentials")
    assert [invoke(server, "guarded", headers={"apikey": KEY}).status_code for _ in range(3)] == [200, 200, 429]
