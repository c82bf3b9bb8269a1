"""JavaScript timers and fetch on a real server: timers sleep in the host (hive.wait), so they do not use
the function's CPU time limit, end with its wall-clock limit, and fire on time while a fetch is in
flight; `Response.redirected` and `response.url` after redirects the host followed. A loopback upstream
answers the fetches. Orders of events, never wall-clock times, tell "on time" from "late".

A function granted nothing whose bundle names a timer is deployed as one that waits (hive/js/server.py
`waits_on_time`): its calls run on guest threads with their I/O context, so its timers sleep in the
host too, and it still may not fetch. One that names none (the TypeScript hello) stays on the event
loop, and so does one that reaches a timer only dynamically, whose timers poll the clock."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hive.build import build_function
from hive.js import build_engine, default_cache_dir
from hive.js.server import BUILD_DIR_ENV, JsBlob
from hive.registry import Registry
from hive.runtime import Runtime
from hive.sandbox import Sandbox
from hive.settings import load_settings
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

# A fetch from a function granted no hosts: refused (a TypeError naming the host's code), with or
# without a timer in its bundle.
REFUSED_FETCH = """
Deno.serve(async () => {
  %s
  try {
    await fetch(`${Deno.env.get("UPSTREAM")}/json`);
    return Response.json({ fetched: true });
  } catch (e) {
    return Response.json({ name: e.name, message: e.message });
  }
});
"""

# Reaches the timer through a computed name, which the deploy-time scan cannot see: it runs on the
# event loop, where its timers poll the clock (CPU time).
DYNAMIC_TIMER = """
const later = globalThis["set" + "Time" + "out"];
Deno.serve(async (req) => {
  const order = [];
  later(() => order.push("b"), 20);
  later(() => order.push("a"), 5);
  await new Promise((resolve) => later(resolve, Number(new URL(req.url).searchParams.get("ms"))));
  return Response.json(order);
});
"""

# loadtests/ts_bench.py's TypeScript hello: no timers.
HELLO_TS = """\
interface Hello {
  name?: string;
}

Deno.serve(async (req: Request) => {
  const { name = "World" }: Hello = await req.json().catch(() => ({}));
  const timestamp = new Date().toISOString().replace(/\\.\\d{3}Z$/, "Z");
  return Response.json({ message: `Hello, ${name}!`, timestamp });
});
"""


@pytest.fixture(scope="module")
def up() -> Iterator[Upstream]:
    u = Upstream()
    u.thread.start()
    assert u.ready.wait(10)
    yield u
    u.stop()


@pytest.fixture(scope="module")
def upstream(up: Upstream) -> str:
    return f"http://127.0.0.1:{up.port}"


def build_ts_hello(root: Path) -> str:
    folder = root / "hello-ts"
    folder.mkdir()
    (folder / "index.ts").write_text(HELLO_TS)
    (folder / "hive.toml").write_text('[function]\nname = "hello-ts"\nlanguage = "typescript"\n')
    return build_function(folder).read_text()


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
    hello_ts = build_ts_hello(tmp_path_factory.mktemp("js-timers-build"))
    s = start_server(tmp_path_factory.mktemp("js-timers") / "data", workers=1, env={BUILD_DIR_ENV: str(engines)})
    io = {"allowed_hosts": [upstream], "config": {"UPSTREAM": upstream}}
    bare = {"config": {"UPSTREAM": upstream}}  # no allowed_hosts, no kv
    deploys: dict[str, tuple[str, dict]] = {
        "sleeper": (SLEEPER, {**io, "limits": {"timeout_ms": 300}}),
        "walled": (SLEEPER, {**io, "limits": {"timeout_ms": 300, "wall_timeout_ms": 600}}),
        "timer-during-fetch": (TIMER_DURING_FETCH, {**io, "limits": {"timeout_ms": 1000}}),
        "abort-timeout": (ABORT_TIMEOUT, {**io, "limits": {"timeout_ms": 1000}}),
        "redirects": (REDIRECTS, {**io, "limits": {"timeout_ms": 1000}}),
        # No grants, but timers in the bundle: guest threads, timers asleep in the host.
        "short-timer": (SHORT_TIMER, {"limits": {"timeout_ms": 1000}}),
        "bare-sleeper": (SLEEPER, {"limits": {"timeout_ms": 300}}),
        "bare-walled": (SLEEPER, {"limits": {"timeout_ms": 300, "wall_timeout_ms": 600}}),
        "bare-fetch-timer": (REFUSED_FETCH % "await new Promise((r) => setTimeout(r, 1));", bare),
        # No grants and no timer named: the event loop.
        "bare-fetch": (REFUSED_FETCH % "", bare),
        "dynamic-timer": (DYNAMIC_TIMER, {"limits": {"timeout_ms": 300}}),
        "hello-ts": (hello_ts, {}),
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
    r = invoke(server, "short-timer")
    assert r.status_code == 200, r.text
    assert r.json() == ["a", "b"]


def test_a_function_without_grants_sleeps_past_its_cpu_limit(server: Server) -> None:
    # timeout_ms 300 and a 1.5 s timer, nothing granted: asleep in the host, as with grants.
    r = invoke(server, "bare-sleeper")
    assert r.status_code == 200, r.text
    assert r.json() == {"slept": 1500}


def test_a_function_without_grants_sleeping_past_its_wall_clock_limit_is_a_504(server: Server) -> None:
    body = assert_error(invoke(server, "bare-walled"), 504, "wall_timeout")
    assert "wall_timeout_ms" in body["message"]


@pytest.mark.parametrize("name", ["bare-fetch-timer", "bare-fetch"])
def test_a_function_without_grants_still_may_not_fetch(server: Server, up: Upstream, name: str) -> None:
    # On a guest thread (a timer in its bundle) or on the event loop: the same refusal, as a value.
    hits = up.hits
    r = invoke(server, name)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["name"] == "TypeError" and out["message"].endswith("(host_not_allowed)"), out
    assert up.hits == hits  # nothing reached the upstream


def test_a_timer_reached_dynamically_polls_on_the_event_loop(server: Server) -> None:
    r = fresh(server, "GET", "/functions/v1/dynamic-timer?ms=40")
    assert r.status_code == 200, r.text
    assert r.json() == ["a", "b"]
    # Polling is CPU time: a 1.5 s timer ends at the 300 ms CPU limit (docs/typescript.md says so).
    assert_error(fresh(server, "GET", "/functions/v1/dynamic-timer?ms=1500"), 504, "timeout")


def test_the_typescript_hello_stays_on_the_event_loop(
    server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    r = fresh(server, "POST", "/functions/v1/hello-ts", json={"name": "Hive"})
    assert r.status_code == 200, r.text
    assert r.json()["message"] == "Hello, Hive!"
    # What the server recorded at deploy, and what a worker's runtime makes of it: its Loaded.does_io
    # is the one switch between the event loop and guest threads (hive/invoke.py finish()).
    monkeypatch.setenv(BUILD_DIR_ENV, str(default_cache_dir()))
    config = tmp_path / "hive.toml"
    config.write_text("")
    settings = load_settings(env={"HIVE_CONFIG": str(config)}, overrides={"data_dir": str(tmp_path / "data")})
    registry = Registry(server.data_dir / "registry.lmdb")
    sandbox = Sandbox(tmp_path / "cache")
    try:
        rt = Runtime(settings, registry, sandbox)
        rt.sync()
        assert not rt.failed, rt.failed
        on_threads = {name for name, f in rt.functions.items() if f.does_io}
        assert on_threads == {
            "sleeper",
            "walled",
            "timer-during-fetch",
            "abort-timeout",
            "redirects",
            "short-timer",
            "bare-sleeper",
            "bare-walled",
            "bare-fetch-timer",
        }
        recorded = {name: JsBlob.unpack(registry.blob(f.record.sha256)).waits for name, f in rt.functions.items()}
        assert recorded["hello-ts"] is False and recorded["bare-sleeper"] is True
        assert recorded["redirects"] is False  # fetch but no timer: on threads for its grants alone
    finally:
        sandbox.close()
        registry.close()
