"""The I/O examples (functions/rates: an exchange-rate proxy cached in KV; functions/visits: a visit
counter), built from source and deployed to a real server of two workers, against a real upstream on
127.0.0.1 granted in the deploy manifest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import wasmtime

from hive.build import build_function, deploy_manifest
from hive.manifest import WASI_GROUPS
from hive.outbound.errors import CODES
from tests.io.conftest import Upstream
from tests.operations.test_metrics_logs import sample
from tests.security.common import fresh
from tests.support import BIN, ROOT, Server, poll, start_server

pytestmark = pytest.mark.slow

EXAMPLES = ("rates", "visits")
API_KEY = "rates-key-5f0c2a"


class RatesUpstream(Upstream):
    """The shared loopback upstream plus /rates, a Frankfurter-like API that counts its calls per base."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: Counter[str] = Counter()
        self.bases: Counter[str] = Counter()
        self.auth: dict[str, str] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _route(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes, dict[str, str]]:
        url = urllib.parse.urlsplit(target)
        self.paths[url.path] += 1
        if url.path != "/rates":
            return await super()._route(method, target, headers, body)
        base = dict(urllib.parse.parse_qsl(url.query)).get("from", "")
        self.bases[base] += 1
        self.auth[base] = headers.get("authorization", "")
        doc = {
            "amount": 1.0,
            "base": base,
            "date": "2026-11-24",
            "rates": {"USD": 1.08, "JPY": 161.2},
            "n": self.bases[base],
        }
        return 200, "application/json", json.dumps(doc).encode(), {}


@pytest.fixture(scope="module")
def upstream() -> Iterator[RatesUpstream]:
    up = RatesUpstream()
    up.thread.start()
    assert up.ready.wait(10)
    yield up
    up.stop()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    """Each example built with `hive.build` from a clean copy of its folder."""
    out = {}
    for name in EXAMPLES:
        folder = tmp_path_factory.mktemp("io-examples") / name
        shutil.copytree(ROOT / "functions" / name, folder, ignore=shutil.ignore_patterns("*.wasm"))
        out[name] = build_function(folder).read_bytes()
    return out


def rates_manifest(up: RatesUpstream, url: str, *, grant: bool = True, **config: str) -> str:
    """functions/rates' own manifest with the loopback upstream granted and RATES_URL pointing at it."""
    m = deploy_manifest(ROOT / "functions" / "rates")
    if grant:
        m["allowed_hosts"] = [up.url]
    m["config"] = {**m["config"], "RATES_URL": up.url + url, **config}
    return json.dumps(m)


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, built: dict[str, bytes], upstream: RatesUpstream
) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("io-examples") / "data", workers=2)
    rates = "/rates?from={base}"
    slow = json.loads(rates_manifest(upstream, "/slow?ms=3000&c={base}"))
    slow["limits"]["fetch"]["timeout_ms"] = 300
    deploys = {
        "rates-local": rates_manifest(upstream, rates),
        "rates-short": rates_manifest(upstream, rates, CACHE_TTL_S="2"),
        "rates-key": rates_manifest(upstream, rates, RATES_API_KEY=API_KEY),
        "rates-fail": rates_manifest(upstream, "/fail"),
        "rates-invalid": rates_manifest(upstream, "/big?n=10"),
        "rates-ungranted": rates_manifest(upstream, rates, grant=False),
        "rates-slow": json.dumps(slow),
        "visits": json.dumps(deploy_manifest(ROOT / "functions" / "visits")),
    }
    try:
        for name, manifest in deploys.items():
            r = s.deploy(name, built["visits" if name == "visits" else "rates"], manifest)
            assert r.status_code == 201, (name, r.text)
        yield s
    finally:
        s.stop()


def assert_error(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json" and r.headers["cache-control"] == "no-store"
    body = r.json()
    assert body["error"] == code and isinstance(body["message"], str) and body["message"], body
    return body


def cli(server: Server, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    env.update(HIVE_URL=server.url, HIVE_ADMIN_TOKEN=server.token)
    r = subprocess.run(
        [str(BIN / "edge-hive"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return r


# ---- both: what the module imports is what hive.toml grants -----------------------------------------


@pytest.mark.parametrize(
    ("name", "host_calls"),
    [
        ("rates", {"log", "fetch_send", "fetch_wait", "kv", "result_read"}),
        ("visits", {"log", "kv", "result_read"}),
    ],
)
def test_permissions_are_exactly_what_the_module_uses(built: dict[str, bytes], name: str, host_calls: set[str]) -> None:
    module = wasmtime.Module(wasmtime.Engine(), built[name])
    wasi, hive = set(), set()
    for imp in module.imports:
        if imp.module == "hive":
            hive.add(imp.name)
        else:
            assert imp.module == "wasi_snapshot_preview1", imp.module
            wasi |= {g for g, names in WASI_GROUPS.items() if imp.name in names and g != "process"}
    perms = deploy_manifest(ROOT / "functions" / name)
    assert wasi == set(perms["wasi"])  # sufficient, and nothing granted that goes unused
    assert hive == host_calls
    assert perms["kv"] == ["default"]
    assert bool(perms.get("allowed_hosts")) == ("fetch_send" in hive)  # visits reaches no network


# ---- rates -----------------------------------------------------------------------------------------------


def rates(server: Server, name: str, query: str = "", method: str = "GET") -> httpx.Response:
    return fresh(server, method, f"/functions/v1/{name}" + (f"?{query}" if query else ""))


def test_rates_first_call_fetches_then_the_cache_answers(server: Server, upstream: RatesUpstream) -> None:
    first = rates(server, "rates-local", "base=usd")
    assert first.status_code == 200, first.text
    assert first.headers["content-type"] == "application/json" and first.headers["x-cache"] == "miss"
    doc = first.json()
    assert doc["cached"] is False and doc["base"] == "USD"
    assert doc["data"] == {
        "amount": 1.0,
        "base": "USD",
        "date": "2026-11-24",
        "rates": {"USD": 1.08, "JPY": 161.2},
        "n": 1,
    }  # the upstream's JSON, as it sent it
    assert upstream.bases["USD"] == 1
    for _ in range(6):  # new connections: both workers read the one store
        r = rates(server, "rates-local", "base=USD")
        assert r.status_code == 200 and r.headers["x-cache"] == "hit", r.text
        assert r.json() == {**doc, "cached": True}
    assert upstream.bases["USD"] == 1  # the upstream was asked once
    # The cached document is in the store, under rates:<BASE>, readable by the admin.
    stored = json.loads(cli(server, "kv", "get", "default", "rates:USD").stdout)
    assert stored == {k: v for k, v in doc.items() if k != "cached"}


def test_rates_default_base_is_eur(server: Server, upstream: RatesUpstream) -> None:
    r = rates(server, "rates-local")
    assert r.status_code == 200 and r.json()["base"] == "EUR" and r.json()["data"]["base"] == "EUR", r.text


def test_rates_cache_expires_after_the_ttl(server: Server, upstream: RatesUpstream) -> None:
    seen: list[tuple[bool, int]] = []

    def refetched() -> bool:
        doc = rates(server, "rates-short", "base=GBP").json()
        seen.append((doc["cached"], doc["data"]["n"]))
        return len(seen) > 1 and not doc["cached"]

    poll("the 2 s cache entry to expire", refetched, timeout=60, interval=0.2)
    assert seen[0] == (False, 1) and seen[-1] == (False, 2), seen  # fetched, expired, fetched again
    assert all(cached and n == 1 for cached, n in seen[1:-1]), seen  # in between, the cache answered
    assert len(seen) > 2, seen  # and it did answer at least once
    assert upstream.bases["GBP"] == 2


def test_rates_upstream_error_is_a_502_with_its_status(server: Server, upstream: RatesUpstream) -> None:
    before = upstream.paths["/fail"]
    for _ in range(2):
        body = assert_error(rates(server, "rates-fail", "base=TRY"), 502, "upstream_error")
        assert body["upstream_status"] == 500
    assert upstream.paths["/fail"] == before + 2  # an error is never cached


def test_rates_upstream_that_is_not_json(server: Server) -> None:
    assert_error(rates(server, "rates-invalid", "base=ZAR"), 502, "upstream_invalid")


def test_rates_ungranted_host_gives_the_fetch_error_code(server: Server, upstream: RatesUpstream) -> None:
    calls = sum(upstream.paths.values())
    body = assert_error(rates(server, "rates-ungranted", "base=CHF"), 502, "host_not_allowed")
    assert "allowed_hosts" in body["message"]
    assert sum(upstream.paths.values()) == calls  # nothing was sent
    log = fresh(server, "GET", "/api/v1/edge/rates-ungranted/logs", headers=server.admin).text
    records = [json.loads(line) for line in log.splitlines()]
    assert any(r["kind"] == "outbound" and r.get("error") == "host_not_allowed" for r in records), records
    assert any(r["kind"] == "output" and "host_not_allowed" in r["text"] for r in records), records


def test_rates_slow_upstream_is_a_504(server: Server) -> None:
    assert_error(rates(server, "rates-slow", "base=SEK"), 504, "timeout")


def test_rates_sends_the_api_key_when_configured(server: Server, upstream: RatesUpstream) -> None:
    assert rates(server, "rates-key", "base=JPY").status_code == 200
    assert upstream.auth["JPY"] == f"Bearer {API_KEY}"
    assert rates(server, "rates-local", "base=NOK").status_code == 200
    assert upstream.auth["NOK"] == ""  # and nothing without one
    assert API_KEY not in server.log()


@pytest.mark.parametrize("query", ["base=EU", "base=EURO", "base=E1R", "base=%45UR", "base="])
def test_rates_invalid_base(server: Server, query: str) -> None:
    assert_error(rates(server, "rates-local", query), 400, "invalid_base")


def test_rates_only_reads(server: Server) -> None:
    r = rates(server, "rates-local", method="POST")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, HEAD"


def test_rates_outbound_calls_are_logged_and_counted(server: Server) -> None:
    assert rates(server, "rates-local", "base=AUD").status_code == 200
    records = [
        json.loads(line)
        for line in fresh(server, "GET", "/api/v1/edge/rates-local/logs", headers=server.admin).text.splitlines()
    ]
    assert any(
        r["kind"] == "outbound"
        and r["method"] == "GET"
        and r["host"] == "127.0.0.1"
        and r["status"] == 200
        and r["bytes_in"] > 0
        for r in records
    ), records
    text = fresh(server, "GET", "/metrics", headers=server.admin).text
    assert sample(text, "hive_outbound_requests_total", function="rates-local", host="127.0.0.1", status="200") >= 1
    assert sample(text, "hive_outbound_duration_seconds_count", function="rates-local") >= 1


def test_rates_deploys_from_its_folder_and_fails_clearly_offline(server: Server, tmp_path: Path) -> None:
    """`edge-hive function deploy functions/rates` as it is: its default upstream is on the internet, which
    the test machine may not reach. Either way the answer is clear."""
    shutil.copytree(ROOT / "functions" / "rates", tmp_path / "rates", ignore=shutil.ignore_patterns("*.wasm"))
    cli(server, "function", "deploy", "rates", cwd=tmp_path)
    r = rates(server, "rates", "base=MXN")  # a base no other test caches: the store is shared
    if r.status_code == 200:  # online: the real API answered
        assert r.json()["base"] == "MXN" and r.json()["cached"] is False
    else:  # offline: the fetch error's code (dns_failed, connect_failed, connect_timeout, ...), or the upstream's
        assert r.status_code in (502, 504), r.text
        body = assert_error(r, r.status_code, r.json()["error"])
        assert body["error"] in {*CODES, "upstream_error"}, body


# ---- visits ----------------------------------------------------------------------------------------------


def visit(server: Server, path: str = "", method: str = "GET") -> httpx.Response:
    return fresh(server, method, "/functions/v1/visits" + path)


def count(server: Server, path: str = "") -> int:
    r = visit(server, path)
    assert r.status_code == 200 and r.headers["cache-control"] == "no-store", r.text
    return r.json()["visits"]


def test_concurrent_visits_are_counted_exactly(server: Server) -> None:
    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(lambda _: visit(server, "?page=/concurrent"), range(20)))
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers if r.status_code != 200]
    assert sorted(r.json()["visits"] for r in answers) == list(range(1, 21))  # each increment saw its own value
    assert {r.json()["page"] for r in answers} == {"/concurrent"}
    assert cli(server, "kv", "get", "default", "visits:/concurrent").stdout.strip() == "20"


def test_pages_are_counted_apart(server: Server) -> None:
    assert [count(server, "/blog/a") for _ in range(3)] == [1, 2, 3]
    assert [count(server, "?page=/blog/b") for _ in range(2)] == [1, 2]
    # The page from the sub-path, from ?page= and percent-encoded are one page; POST counts too.
    assert count(server, "?page=%2Fblog%2Fa") == 4
    r = visit(server, "/blog/a", method="POST")
    assert r.status_code == 200 and r.json() == {"page": "/blog/a", "visits": 5}
    assert visit(server, "/blog/b?x=1").json() == {"page": "/blog/b", "visits": 3}
    assert visit(server).json()["page"] == "/"
    weird = 'a "quoted" é/ü'
    assert visit(server, "?page=" + urllib.parse.quote(weird)).json() == {"page": weird, "visits": 1}


def test_list_pages_through_the_counters(server: Server) -> None:
    expected = {f"/docs/{i:02d}": i % 3 + 1 for i in range(7)}
    for page, n in expected.items():
        for _ in range(n):
            count(server, page)
    count(server, "/other")
    got: dict[str, int] = {}
    cursor = ""
    for _ in range(20):  # bounded: 7 counters in pages of 3
        r = visit(server, "?list=1&prefix=/docs/&limit=3" + (f"&cursor={cursor}" if cursor else ""))
        assert r.status_code == 200 and r.headers["content-type"] == "application/json", r.text
        doc = r.json()
        assert len(doc["pages"]) <= 3
        got.update({p["page"]: p["visits"] for p in doc["pages"]})
        cursor = doc["cursor"]
        if cursor is None:
            break
    assert cursor is None and got == expected
    everything = visit(server, "?list=1&limit=100").json()
    pages = [p["page"] for p in everything["pages"]]
    assert "/other" in pages and set(expected) <= set(pages) and pages == sorted(pages)


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("?page=" + "x" * 257, 400, "invalid_page"),
        ("?list=1&limit=0", 400, "invalid_limit"),
        ("?list=1&limit=101", 400, "invalid_limit"),
        ("?list=1&cursor=zz", 400, "invalid_cursor"),
    ],
)
def test_visits_bad_requests(server: Server, path: str, status: int, code: str) -> None:
    assert_error(visit(server, path), status, code)


def test_visits_other_methods(server: Server) -> None:
    r = visit(server, "/blog/a", method="DELETE")
    assert_error(r, 405, "method_not_allowed")
    assert r.headers["allow"] == "GET, POST"
