"""Hostile deploys against a real server with a small upload limit (HIVE_MAX_UPLOAD_BYTES=64 KiB).

Bad uploads are refused with a clear JSON error and change nothing: the previous version keeps
serving, nothing is written outside the data dir, and the registry is intact at the end. Fifty
concurrent deploys of one name leave exactly one of the uploads current, whole.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from hive.registry import Registry
from tests.guests import guest, wat
from tests.security.common import (
    assert_error,
    check_registry,
    chunks,
    const_guest,
    fresh,
    healthy,
    invoke,
    with_data_segment,
)
from tests.support import Server, start_server

pytestmark = pytest.mark.slow

LIMIT = 64 * 1024
V1 = b"target v1"


@dataclass
class Uploads:
    server: Server
    expected: dict[str, int | None] = field(default_factory=dict)
    race_winner: bytes | None = None

    def unchanged(self) -> None:
        """The server serves and 'target' is still its first version, alone."""
        healthy(self.server)
        r = invoke(self.server, "target")
        assert (r.status_code, r.content) == (200, V1)
        r = fresh(self.server, "GET", "/api/v1/edge/target/versions", headers=self.server.admin)
        assert [v["version"] for v in r.json()["versions"]] == [1] and r.json()["current"] == 1


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Uploads]:
    server = start_server(
        tmp_path_factory.mktemp("uploads") / "data", workers=2, env={"HIVE_MAX_UPLOAD_BYTES": str(LIMIT)}
    )
    try:
        u = Uploads(server)
        r = server.deploy("target", const_guest(V1))
        assert r.status_code == 201, r.text
        u.expected["target"] = 1
        yield u
        check_registry(server, u.expected)
    finally:
        server.stop()


def post_deploy(server: Server, **kw: object) -> httpx.Response:
    with server.client() as c:
        return c.post("/api/v1/edge/deploy", headers={**server.admin, **kw.pop("headers", {})}, **kw)  # type: ignore[arg-type]


def sized_module(total: int) -> bytes:
    """A valid ABI v1 module of exactly `total` bytes (a data segment pads it)."""
    base = guest("unreachable", pages=2)
    for pad in range(total - len(base) - 16, total - len(base)):
        wasm = with_data_segment(base, pad)
        if len(wasm) == total:
            return wasm
    raise AssertionError(f"no padding gives {total} bytes")


# --- not a module, or a broken one ---

VALID = const_guest(b"anything")


@pytest.mark.parametrize(
    "wasm",
    [
        b"hello world, not wasm at all",
        b"",
        b"\0asm",  # the magic alone
        b"\0asm\x01\x00\x00\x00garbage after the header",
        b"\0asm\x0d\x00\x01\x00",  # a component's header
        VALID[:8],
        VALID[: len(VALID) // 2],
        VALID[:-1],
        b"\x00" * 1000,
    ],
    ids=["text", "empty", "magic-only", "garbage", "component", "header-only", "half", "minus-one-byte", "zeros"],
)
def test_not_a_valid_module(up: Uploads, wasm: bytes) -> None:
    assert_error(up.server.deploy("target", wasm), 422, "invalid_module")
    up.unchanged()


def test_module_without_the_abi_exports(up: Uploads) -> None:
    body = assert_error(up.server.deploy("target", wat("(module)")), 422, "invalid_module")
    assert "memory" in body["message"] or "hive_" in body["message"]
    up.unchanged()


# --- size ---


def test_upload_at_the_limit_is_accepted_and_one_byte_more_is_not(up: Uploads) -> None:
    at = sized_module(LIMIT)
    over = sized_module(LIMIT + 1)
    body = assert_error(up.server.deploy("target", over), 413, "payload_too_large")
    assert body["limit"] == LIMIT
    up.unchanged()
    r = up.server.deploy("at-limit", at)
    assert r.status_code == 201, r.text
    assert r.json()["size"] == LIMIT
    up.expected["at-limit"] = 1


def test_upload_far_over_the_limit(up: Uploads) -> None:
    big = sized_module(4 * LIMIT)
    assert_error(up.server.deploy("target", big), 413, "payload_too_large")
    up.unchanged()


def test_chunked_upload_over_the_limit(up: Uploads) -> None:
    """No Content-Length: the server counts while it reads."""
    request = httpx.Request(
        "POST",
        up.server.url + "/api/v1/edge/deploy",
        data={"function": "target"},
        files={"wasm": ("f.wasm", sized_module(4 * LIMIT), "application/wasm")},
    )
    payload = request.read()
    with up.server.client() as c:
        r = c.post(
            "/api/v1/edge/deploy",
            content=chunks(payload, 8192),
            headers={**up.server.admin, "content-type": request.headers["content-type"]},
        )
    assert_error(r, 413, "payload_too_large")
    up.unchanged()


def test_chunked_upload_under_the_limit_works(up: Uploads) -> None:
    request = httpx.Request(
        "POST",
        up.server.url + "/api/v1/edge/deploy",
        data={"function": "chunked"},
        files={"wasm": ("f.wasm", const_guest(b"chunked ok"), "application/wasm")},
    )
    payload = request.read()
    with up.server.client() as c:
        r = c.post(
            "/api/v1/edge/deploy",
            content=chunks(payload, 100),
            headers={**up.server.admin, "content-type": request.headers["content-type"]},
        )
    assert r.status_code == 201, r.text
    up.expected["chunked"] = 1
    assert invoke(up.server, "chunked").content == b"chunked ok"


# --- form ---


def test_missing_fields(up: Uploads) -> None:
    wasm = const_guest(b"x")
    cases = [
        {"data": {"function": "target"}, "files": {"other": ("f.wasm", wasm)}},  # no wasm
        {"files": {"wasm": ("f.wasm", wasm)}},  # no function
        {"data": {"function": "target", "wasm": "not a file"}, "files": {"x": ("x", b"x")}},  # wasm not a file
    ]
    for kw in cases:
        assert_error(post_deploy(up.server, **kw), 400, "bad_request")
        up.unchanged()


@pytest.mark.parametrize(
    "ctype, content",
    [
        ("application/json", json.dumps({"function": "target", "wasm": "AGFzbQ=="}).encode()),
        ("application/wasm", VALID),
        ("application/x-www-form-urlencoded", b"function=target&wasm=x"),
        ("text/plain", b"hello"),
    ],
)
def test_wrong_content_type(up: Uploads, ctype: str, content: bytes) -> None:
    assert_error(
        post_deploy(up.server, content=content, headers={"content-type": ctype}), 415, "unsupported_media_type"
    )
    up.unchanged()


def test_malformed_multipart(up: Uploads) -> None:
    r = post_deploy(
        up.server, content=b"--nope\r\n\r\nrubbish", headers={"content-type": "multipart/form-data; boundary=xyz"}
    )
    assert 400 <= r.status_code < 500, r.text
    assert r.json()["error"]
    up.unchanged()


def test_bad_manifest_is_refused(up: Uploads) -> None:
    for manifest in [
        "{not json",
        '{"limits": {"timeout_ms": -1}}',
        '{"wasi": ["sockets"]}',
        '{"unknown": 1}',
        '{"limits": {"memory_mb": 100000}}',
        '{"config": {"A=B": "x"}}',
    ]:
        r = up.server.deploy("target", VALID, manifest)
        assert_error(r, 422, "invalid_manifest")
    up.unchanged()


# --- names ---

BAD_NAMES = [
    "../x",
    "../../../../etc/passwd",
    "a/b",
    "/abs",
    "a\\b",
    "a\x00b",
    "Hello",
    "TARGET",
    "héllo",
    "функция",
    "名前",
    "deploy",
    "",
    "x" * 64,
    ".hidden",
    "-dash",
    "a b",
    "a.wasm",
    "target\n",
]


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def test_bad_names_are_refused_and_write_nothing(up: Uploads) -> None:
    root = up.server.data_dir.parent
    before = _tree(root)
    for name in BAD_NAMES:
        body = assert_error(up.server.deploy(name, VALID), 400, "invalid_name")
        assert "\x00" not in body["message"]
    up.unchanged()
    # Nothing new anywhere under the test's folder (the data dir included), except metrics files.
    new = {p for p in _tree(root) - before if not p.startswith("data/metrics")}
    assert new == set()


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/edge/..%2F..%2Fetc/versions",
        "/api/v1/edge/%2e%2e/versions",
        "/api/v1/edge/a%00b/versions",
        "/api/v1/edge/Target/versions",
        "/api/v1/edge/%C3%A9/logs",
        "/api/v1/edge/..%2Ftarget/rollback",
    ],
)
def test_bad_names_in_admin_paths(up: Uploads, path: str) -> None:
    method = "POST" if path.endswith("rollback") else "GET"
    r = fresh(up.server, method, path, headers=up.server.admin)
    assert r.status_code in (400, 404), r.text
    assert r.json()["error"] in ("invalid_name", "not_found")
    up.unchanged()


def test_the_upload_file_name_is_never_used(up: Uploads) -> None:
    marker = f"evil-{uuid.uuid4().hex}"
    with up.server.client() as c:
        r = c.post(
            "/api/v1/edge/deploy",
            headers=up.server.admin,
            data={"function": "named"},
            files={"wasm": (f"../../../../../../tmp/{marker}.wasm", const_guest(b"named"), "application/wasm")},
        )
    assert r.status_code == 201, r.text
    up.expected["named"] = 1
    assert not Path(f"/tmp/{marker}.wasm").exists()
    assert not any(marker in p for p in _tree(up.server.data_dir.parent))


# --- a race ---


def test_fifty_concurrent_deploys_of_one_name(up: Uploads) -> None:
    n = 50
    modules = [const_guest(f"upload number {i}".encode()) for i in range(n)]
    shas = [hashlib.sha256(m).hexdigest() for m in modules]
    assert len(set(shas)) == n
    results: list[httpx.Response | Exception | None] = [None] * n
    barrier = threading.Barrier(n)

    def one(i: int) -> None:
        try:
            with up.server.client(headers={"connection": "close"}) as c:  # each its own connection
                barrier.wait(timeout=60)
                results[i] = c.post(
                    "/api/v1/edge/deploy",
                    headers=up.server.admin,
                    data={"function": "race"},
                    files={"wasm": ("f.wasm", modules[i], "application/wasm")},
                )
        except Exception as e:  # reported below
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(isinstance(r, httpx.Response) for r in results), results
    ok = {}
    for i, r in enumerate(results):
        assert isinstance(r, httpx.Response)
        if r.status_code == 201:
            rec = r.json()
            assert rec["sha256"] == shas[i] and rec["size"] == len(modules[i])
            ok[rec["version"]] = i
        else:  # a clean error, never a crash
            assert r.status_code < 600 and r.json()["error"], r.text
    assert len(ok) == n, f"only {len(ok)} of {n} deploys succeeded"
    assert sorted(ok) == list(range(1, n + 1))  # every deploy got its own version, none lost

    r = fresh(up.server, "GET", "/api/v1/edge/race/versions", headers=up.server.admin).json()
    current = r["current"]
    assert current == n  # the pointer follows the newest version
    kept = [v["version"] for v in r["versions"]]
    assert kept == list(range(kept[0], current + 1)) and len(kept) == 10  # contiguous; keep_versions=10
    winner = ok[current]
    cur = next(v for v in r["versions"] if v["version"] == current)
    assert cur["sha256"] == shas[winner]
    for _ in range(10):  # every worker serves the winner, whole
        got = invoke(up.server, "race")
        assert (got.status_code, got.content) == (200, f"upload number {winner}".encode())
    up.expected["race"] = current
    up.race_winner = modules[winner]


def test_zz_registry_is_intact(up: Uploads) -> None:
    check_registry(up.server, up.expected)
    winner = up.race_winner
    reg = Registry(up.server.data_dir / "registry.lmdb")
    try:
        assert [v.version for v in reg.versions("target")] == [1]
        if winner is not None:
            rec = reg.current("race")
            assert rec is not None and reg.blob(rec.sha256) == winner
    finally:
        reg.close()
