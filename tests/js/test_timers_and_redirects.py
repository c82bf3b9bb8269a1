"""JavaScript timers and fetch on a real server: timers sleep in the host (hive.wait), so they do not use
the function's CPU time limit, end with its wall-clock limit, and fire on time while a fetch is in
flight; `Response.redirected` and `response.url` after redirects the host followed. A loopback upstream
answers the fetches. Orders of events, never wall-clock times, tell "on time" from "late"."""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from hive.js import build_engine, default_cache_dir
from tests.io.conftest import Upstream
from tests.security.common import assert_error, fresh
from tests.support import Server, start_server

pytestmark = pytest.mark.slow

SLEEPER = """
Deno.serve(async () => {
  setTimeout(() => console.log("never: dropped when the response is sent"), 60_000);
  await new Promise((resolve) => setTimeout(resolve, 1500));
  return Response.json({ slept: 1500 });
});
"""

# A 200 ms timer set while a 1.5 s fetch is in flight: on time, its own fetch answers before the slow one.
TIMER_DURING_FETCH = """
Deno.serve(async () => {
  const up = Deno.env.get("UPSTREAM");
  const events = [];
  const probe = new Promise((resolve, reject) =>
    setTimeout(() => {
      events.push("timer");
      fetch(`${up}/json`).then((r) => r.json()).then(() => events.push("probe answered")).then(resolve, reject);
    }, 200),
  );
  const slow = fetch(`${up}/slow?ms=1500`).then((r) => r.text()).then((t) => events.push(`slow answered: ${t}`));
  await Promise.all([probe, slow]);
  return Response.json(events);
});
"""

# AbortSignal.timeout(200) on a 1.5 s fetch, next to another 1.5 s fetch: on time, the fetch the abort
# handler starts answers before the other slow one.
ABORT_TIMEOUT = """
Deno.serve(async () => {
  const up = Deno.env.get("UPSTREAM");
  const events = [];
  const aborted = fetch(`${up}/slow?ms=1500`, { signal: AbortSignal.timeout(200) }).then(
    () => events.push("answered despite the signal"),
    async (e) => {
      events.push(`aborted: ${e.name}`);
      await (await fetch(`${up}/json`)).json();
      events.push("probe answered");
    },
  );
  const other = fetch(`${up}/slow?ms=1500`).then((r) => r.text()).then(() => events.push("other answered"));
  await Promise.all([aborted, other]);
  return Response.json(events);
});
"""

REDIRECTS = """
Deno.serve(async () => {
  const up = Deno.env.get("UPSTREAM");
  const cases = {
    absolute: `${up}/redirect?to=${encodeURIComponent(`${up}/json?x=1`)}`,
    relative: `${up}/redirect?to=${encodeURIComponent("/json")}`,
    direct: `${up}/json?y=2#part`,
  };
  const out = {};
  for (const [name, url] of Object.entries(cases)) {
    const r = await fetch(url);
    out[name] = { status: r.status, redirected: r.redirected, url: r.url, rate: (await r.json()).rate };
  }
  return Response.json(out);
});
"""

SHORT_TIMER = """
Deno.serve(async () => {
  const order = [];
  setTimeout(() => order.push("b"), 20);
  setTimeout(() => order.push("a"), 5);
  await new Promise((resolve) => setTimeout(resolve, 40));
  return Response.json(order);
});
"""


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    up = Upstream()
    up.thread.start()
    assert up.ready.wait(10)
    yield f"http://127.0.0.1:{up.port}"
    up.stop()


def deploy_js(server: Server, name: str, source: str, manifest: dict) -> httpx.Response:
    with server.client() as c:
        return c.post(
            "/api/v1/edge/deploy",
            headers=server.admin,
            data={"function": name, "manifest": json.dumps({"kind": "js", **manifest})},
            files={"wasm": (f"{name}.js", source.encode(), "text/javascript")},
        )


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, upstream: str) -> Iterator[Server]:
    engines = default_cache_dir()
    build_engine(engines)  # here, so that no deploy waits for the engine build
    s = start_server(tmp_path_factory.mktemp("js-timers") / "data", workers=1, env={"HIVE_JS_BUILD_DIR": str(engines)})
    io = {"allowed_hosts": [upstream], "config": {"UPSTREAM": upstream}}
    deploys: dict[str, tuple[str, dict]] = {
        "sleeper": (SLEEPER, {**io, "limits": {"timeout_ms": 300}}),
        "walled": (SLEEPER, {**io, "limits": {"timeout_ms": 300, "wall_timeout_ms": 600}}),
        "timer-during-fetch": (TIMER_DURING_FETCH, {**io, "limits": {"timeout_ms": 1000}}),
        "abort-timeout": (ABORT_TIMEOUT, {**io, "limits": {"timeout_ms": 1000}}),
        "redirects": (REDIRECTS, {**io, "limits": {"timeout_ms": 1000}}),
        "short-timer": (SHORT_TIMER, {"limits": {"timeout_ms": 1000}}),  # no grants: runs on the event loop
    }
    try:
        for name, (source, manifest) in deploys.items():
            r = deploy_js(s, name, source, manifest)
            assert r.status_code == 201, (name, r.text)
        yield s
    except BaseException:
        s.stop()
        raise
    s.stop()


def invoke(server: Server, name: str) -> httpx.Response:
    return fresh(server, "GET", f"/functions/v1/{name}")


def test_a_timer_longer_than_the_cpu_limit_answers(server: Server) -> None:
    # 1.5 s asleep with timeout_ms 300: the wait is not execution time (a polled clock made this a 504).
    r = invoke(server, "sleeper")
    assert r.status_code == 200, r.text
    assert r.json() == {"slept": 1500}


def test_a_timer_past_the_wall_clock_limit_is_a_504(server: Server) -> None:
    body = assert_error(invoke(server, "walled"), 504, "wall_timeout")
    assert "wall_timeout_ms" in body["message"]


def test_a_timer_fires_on_time_while_a_fetch_is_in_flight(server: Server) -> None:
    r = invoke(server, "timer-during-fetch")
    assert r.status_code == 200, r.text
    # Late (after the slow answer), the probe would answer last.
    assert r.json() == ["timer", "probe answered", "slow answered: slow"]


def test_abort_signal_timeout_aborts_a_slow_fetch_on_time(server: Server) -> None:
    r = invoke(server, "abort-timeout")
    assert r.status_code == 200, r.text
    assert r.json() == ["aborted: TimeoutError", "probe answered", "other answered"]


def test_redirected_and_the_final_url(server: Server, upstream: str) -> None:
    r = invoke(server, "redirects")
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["absolute"] == {"status": 200, "redirected": True, "url": f"{upstream}/json?x=1", "rate": 1.08}
    assert out["relative"] == {"status": 200, "redirected": True, "url": f"{upstream}/json", "rate": 1.08}
    # No redirect: the request's URL, without its fragment (as Deno gives it).
    assert out["direct"] == {"status": 200, "redirected": False, "url": f"{upstream}/json?y=2", "rate": 1.08}


def test_timers_of_a_function_without_grants_still_run(server: Server) -> None:
    # It runs on the event loop, where the host cannot wait: the engine polls the clock (CPU time).
    r = invoke(server, "short-timer")
    assert r.status_code == 200, r.text
    assert r.json() == ["a", "b"]
