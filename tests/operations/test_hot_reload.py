"""Hot reload on a real 4-worker server under keep-alive load: deploys and rollbacks drop no request,
and every request sent after a change's response was received is served by the new version, on any
worker (read-your-writes). Also the versions API, keep_versions pruning, rollback errors and the CLI."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import httpx
import pytest

from tests.guests import const_wat, wat
from tests.load import Load
from tests.support import BIN, Server, poll, start_server

pytestmark = pytest.mark.slow

KEEP = 5
BODY = {"A": "build-A", "B": "build-B"}
WASM = {k: wat(const_wat(v)) for k, v in BODY.items()}
# Guest time limits run on the wall clock: on a loaded 2-core machine a worker can be off the CPU for
# over the default 100 ms in the middle of a trivial call (a 504, not a reload problem).
STEADY = json.dumps({"limits": {"timeout_ms": 10_000}})


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    s = start_server(tmp_path_factory.mktemp("hot") / "data", workers=4, env={"HIVE_KEEP_VERSIONS": str(KEEP)})
    yield s
    s.stop()


def fresh(server: Server, method: str, path: str, **kw: object) -> httpx.Response:
    """One request on a new connection, so the kernel may hand it to any worker."""
    with server.client(headers={"connection": "close"}) as c:
        return c.request(method, path, **kw)  # type: ignore[arg-type]


def rollback(server: Server, name: str, body: bytes | None = None) -> httpx.Response:
    return fresh(server, "POST", f"/api/v1/edge/{name}/rollback", headers=server.admin, content=body or b"")


def versions(server: Server, name: str) -> dict:
    r = fresh(server, "GET", f"/api/v1/edge/{name}/versions", headers=server.admin)
    assert r.status_code == 200, r.text
    return r.json()


@dataclass
class Change:
    what: str
    sent: float  # monotonic, just before the change's request went out
    acked: float  # monotonic, just after its response was received
    body: str  # what every invocation must return from `acked` until the next change is sent


def test_deploys_and_rollbacks_under_load_lose_nothing_and_read_your_writes(server: Server) -> None:
    fn = "hot"
    body_of: dict[int, str] = {}  # version -> the body its build returns
    changes: list[Change] = []
    r = server.deploy(fn, WASM["A"], STEADY)
    assert r.status_code == 201, r.text
    body_of[r.json()["version"]] = BODY["A"]

    with Load(server.url, f"/api/v1/edge/{fn}", clients=4, max_seconds=55) as load:

        def change(what: str, send: Callable[[], httpx.Response], expect_version: int | None = None) -> int:
            start = len(load.results)
            sent = time.monotonic()
            r = send()
            acked = time.monotonic()
            assert r.status_code in (200, 201), (what, r.status_code, r.text)
            version = r.json()["version"]
            if expect_version is not None:
                assert version == expect_version, (what, r.json())
            changes.append(Change(what, sent, acked, body_of[version]))
            # Several requests sent after the ack must come back before the next change, so every
            # window below has requests in it (spread over the 4 keep-alive connections and workers).
            poll(
                f"load after {what}: {load.summary()}",
                lambda: sum(1 for x in load.results[start:] if x.sent_at > acked) >= 12,
                timeout=30,
                interval=0.005,
            )
            return version

        load.wait_for(40)
        builds = "BABABABABABABABABABA"  # 20 deploys; v1 is A, so every change flips the body
        for i, build in enumerate(builds):
            latest = len(body_of) + 1
            body_of[latest] = BODY[build]
            current = change(f"deploy #{i + 1} ({build})", lambda b=build: server.deploy(fn, WASM[b], STEADY), latest)
            if i % 3 == 0:
                continue
            if i % 3 == 1:
                # Default rollback: the newest kept version below the current one.
                change(f"rollback after deploy #{i + 1}", lambda: rollback(server, fn), current - 1)
            else:
                # Explicit rollback to an older kept version (3 back: the other build).
                target = current - 3
                change(
                    f"rollback to v{target}",
                    lambda t=target: rollback(server, fn, json.dumps({"version": t}).encode()),
                    target,
                )
            # Forward again to the newest, so the next deploy flips the body too.
            change(
                f"roll forward to v{current}",
                lambda c=current: rollback(server, fn, json.dumps({"version": c}).encode()),
                current,
            )
        load.wait_for(40)
        results = list(load.results)

    assert len([c for c in changes if c.what.startswith("deploy")]) == 20
    assert len([c for c in changes if c.what.startswith("roll")]) >= 10
    assert not load.failures(), f"{len(load.failures())} failed: {load.failures()[:5]}; {load.summary()}"
    assert {r.body for r in results} == {b"build-A", b"build-B"}
    # Every change flips the body, so each window below tells old from new.
    assert all(a.body != b.body for a, b in zip(changes, changes[1:], strict=False))

    # Read-your-writes: a request sent after a change was acknowledged, and answered before the next
    # change was sent, sees exactly that change's build.
    stale = []
    checked = 0
    for c, nxt in zip(changes, changes[1:] + [None], strict=True):
        end = nxt.sent if nxt else float("inf")
        window = [r for r in results if r.sent_at > c.acked and r.done_at < end]
        assert window or nxt is None, f"no request between {c.what} and {nxt.what if nxt else 'the end'}"
        checked += len(window)
        stale += [(c.what, r.body) for r in window if r.body != c.body.encode()]
    assert not stale, f"{len(stale)} of {checked} requests saw the previous build: {stale[:10]}"
    assert checked >= 12 * len(changes)


def test_versions_are_pruned_to_keep_versions_and_rollback_moves_back(server: Server) -> None:
    fn = "kept"
    for i in range(7):  # v1..v7, A B A B A B A
        r = server.deploy(fn, WASM["AB"[i % 2]])
        assert r.status_code == 201 and r.json()["version"] == i + 1
    v = versions(server, fn)
    assert v["function"] == fn and v["current"] == 7
    assert [x["version"] for x in v["versions"]] == [3, 4, 5, 6, 7]  # at most KEEP, the newest
    assert all(len(x["sha256"]) == 64 and x["size"] > 0 and x["deployed_at"] for x in v["versions"])
    assert len({x["sha256"] for x in v["versions"]}) == 2  # two builds, blobs shared by sha256

    # Rollback without a body, and with an empty JSON object, goes to the previous kept version.
    r = rollback(server, fn)
    assert r.status_code == 200 and r.json()["version"] == 6, r.text
    assert versions(server, fn)["current"] == 6
    for _ in range(12):
        assert fresh(server, "POST", f"/api/v1/edge/{fn}").text == "build-B"
    r = rollback(server, fn, b"{}")
    assert r.status_code == 200 and r.json()["version"] == 5, r.text
    for _ in range(12):
        assert fresh(server, "POST", f"/api/v1/edge/{fn}").text == "build-A"

    # To the oldest kept version, then the default rollback has nowhere to go.
    r = rollback(server, fn, b'{"version": 3}')
    assert r.status_code == 200 and r.json()["version"] == 3, r.text
    r = rollback(server, fn)
    assert r.status_code == 409, r.text
    assert r.json()["error"] == "no_previous_version" and "v3" in r.json()["message"]

    # A pruned version is gone: 404 that lists what is kept; nothing moves.
    for pruned in (1, 2):
        r = rollback(server, fn, json.dumps({"version": pruned}).encode())
        assert r.status_code == 404, r.text
        assert r.headers["content-type"].startswith("application/json")
        assert r.json()["error"] == "not_found" and "3, 4, 5, 6, 7" in r.json()["message"]
    for never in (0, -1, 8, 2**32, 10**30):
        r = rollback(server, fn, json.dumps({"version": never}).encode())
        assert r.status_code == 404 and r.json()["error"] == "not_found", (never, r.text)
    assert versions(server, fn)["current"] == 3

    # A new deploy moves past every rollback and prunes the oldest kept version.
    r = server.deploy(fn, WASM["B"])
    assert r.json()["version"] == 8
    v = versions(server, fn)
    assert v["current"] == 8 and [x["version"] for x in v["versions"]] == [4, 5, 6, 7, 8]
    r = rollback(server, fn, b'{"version": 3}')
    assert r.status_code == 404 and r.json()["error"] == "not_found"


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"version": "3"}',
        b'{"version": 3.0}',
        b'{"version": true}',
        b"[3]",
        b"3",
        b"null",
        b'{"version": [3]}',
        b"\xff\xfe",
    ],
)
def test_rollback_with_a_bad_body_is_400_and_moves_nothing(server: Server, body: bytes) -> None:
    fn = "badbody"
    if fresh(server, "GET", f"/api/v1/edge/{fn}/versions", headers=server.admin).status_code == 404:
        server.deploy(fn, WASM["A"])
        server.deploy(fn, WASM["B"])
    before = versions(server, fn)["current"]
    r = rollback(server, fn, body)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["error"] == "bad_request" and r.json()["message"]
    assert versions(server, fn)["current"] == before


def test_rollback_errors(server: Server) -> None:
    fn = "solo"
    assert server.deploy(fn, WASM["A"]).status_code == 201
    r = rollback(server, fn)
    assert r.status_code == 409, r.text
    assert r.json() == {"error": "no_previous_version", "message": r.json()["message"]}
    assert fn in r.json()["message"]
    assert fresh(server, "POST", f"/api/v1/edge/{fn}").text == "build-A"

    r = rollback(server, "nobody-here")
    assert r.status_code == 404 and r.json()["error"] == "function_not_found"
    r = fresh(server, "POST", f"/api/v1/edge/{fn}/rollback")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = fresh(server, "GET", f"/api/v1/edge/{fn}/versions")
    assert r.status_code == 401
    r = fresh(server, "GET", "/api/v1/edge/nobody-here/versions", headers=server.admin)
    assert r.status_code == 404 and r.json()["error"] == "function_not_found"


def cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    env.update(HIVE_URL=server.url, HIVE_ADMIN_TOKEN=server.token)
    return subprocess.run(
        [str(BIN / "edge-hive"), *args], capture_output=True, text=True, env=env, timeout=120, stdin=subprocess.DEVNULL
    )


def test_cli_versions_and_rollback(server: Server) -> None:
    fn = "clifn"
    for build in "ABA":
        assert server.deploy(fn, WASM[build]).status_code == 201

    r = cli(server, "function", "versions", fn)
    assert r.returncode == 0, r.stderr
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == ["1", "2", "*"] and rows[2][1] == "3"

    r = cli(server, "function", "versions", fn, "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    assert data["current"] == 3 and [v["version"] for v in data["versions"]] == [1, 2, 3]

    r = cli(server, "function", "rollback", fn)
    assert r.returncode == 0, r.stderr
    assert f"{fn} now serves v2 sha256={data['versions'][1]['sha256'][:12]}" in r.stdout
    for _ in range(12):
        assert fresh(server, "POST", f"/api/v1/edge/{fn}").text == "build-B"
    assert cli(server, "function", "versions", fn).stdout.splitlines()[2].startswith("*")

    r = cli(server, "function", "rollback", fn, "--to", "3")
    assert r.returncode == 0, r.stderr
    assert f"{fn} now serves v3" in r.stdout
    for _ in range(12):
        assert fresh(server, "POST", f"/api/v1/edge/{fn}").text == "build-A"

    r = cli(server, "function", "rollback", fn, "--to", "9")
    assert r.returncode == 1 and "404 not_found" in r.stderr and "no version 9" in r.stderr
    r = cli(server, "function", "rollback", fn, "--to", "1")
    assert r.returncode == 0 and f"{fn} now serves v1" in r.stdout
    r = cli(server, "function", "rollback", fn)
    assert r.returncode == 1 and "409 no_previous_version" in r.stderr
    r = cli(server, "function", "versions", "nobody-here")
    assert r.returncode == 1 and "404 function_not_found" in r.stderr
