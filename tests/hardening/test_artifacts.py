"""Compiled artifacts are checked before they are trusted, and go when their module goes (issue 11, item 4)."""

from __future__ import annotations

import logging
import os
import signal
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from hive import abi
from hive.manifest import Manifest
from hive.registry import Registry, sha256_hex
from hive.sandbox import GuestContext, GuestInstance, GuestLimits, Sandbox, artifacts
from tests.guests import RESP, data, guest, packed
from tests.support import poll, start_server


def constant(body: bytes) -> bytes:
    raw = abi.encode_response(abi.Response(200, [(b"content-type", b"text/plain")], body))
    return guest(packed(RESP, len(raw)), data(RESP, raw))


OK = constant(b"ok")


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    s = Sandbox(tmp_path / "cache")
    yield s
    s.close()


def text_section(path: Path) -> tuple[int, int]:
    """(offset, size) of the machine code in an artifact (an ELF64 file)."""
    raw = path.read_bytes()
    assert raw[:4] == b"\x7fELF" and raw[4] == 2
    (shoff,) = struct.unpack_from("<Q", raw, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", raw, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        name, _type, _flags, _addr, offset, size = struct.unpack_from("<IIQQQQ", raw, shoff + i * shentsize)
        return name, offset, size

    _, names_at, _ = section(shstrndx)
    for i in range(shnum):
        name, offset, size = section(i)
        if raw[names_at + name :].split(b"\0", 1)[0] == b".text" and size:
            return offset, size
    raise AssertionError(f"{path} has no .text section")


def overwrite_code(path: Path) -> None:
    """Overwrite the machine code in place with int3 (the file keeps its size, name and digest record)."""
    offset, size = text_section(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xcc" * size)


def calls_ok(sandbox: Sandbox, wasm: bytes) -> bool:
    compiled = sandbox.load(sha256_hex(wasm), wasm, frozenset())
    return (
        GuestInstance(sandbox, compiled, GuestLimits(), GuestContext("f"))
        .call(abi.encode_request(b"GET", b"/", b"", [], b""))
        .body
        == b"ok"
    )


def test_an_artifact_with_changed_code_is_deleted_not_loaded(
    sandbox: Sandbox, caplog: pytest.LogCaptureFixture
) -> None:
    sha = sha256_hex(OK)
    sandbox.compile(OK, sha, frozenset())
    path = sandbox.artifact_path(sha)
    overwrite_code(path)
    other = Sandbox(sandbox.cache_dir)  # a new worker: it has not seen this file yet
    try:
        with pytest.raises(FileNotFoundError):  # the runtime then passes the registry's blob
            other.load(sha, None, frozenset())
        assert not path.exists()
        assert any(
            "does not match the digest" in r.getMessage() for r in caplog.records if r.levelno == logging.WARNING
        )
        assert calls_ok(other, OK)  # recompiled from the wasm
        fd = os.open(path, os.O_RDONLY)
        try:
            assert artifacts.problem(fd, path) is None
        finally:
            os.close(fd)
    finally:
        other.close()


def test_the_same_process_notices_a_change_too(sandbox: Sandbox) -> None:
    sha = sha256_hex(OK)
    sandbox.load(sha, OK, frozenset())  # checked and remembered as checked
    overwrite_code(sandbox.artifact_path(sha))  # a write changes mtime and ctime
    with pytest.raises(FileNotFoundError):
        sandbox.load(sha, None, frozenset())


def test_an_artifact_without_a_digest_is_not_trusted(sandbox: Sandbox) -> None:
    sha = sha256_hex(OK)
    sandbox.compile(OK, sha, frozenset())
    path = sandbox.artifact_path(sha)
    os.removexattr(path, artifacts.XATTR)  # e.g. copied by a tool that drops extended attributes
    with pytest.raises(FileNotFoundError):
        sandbox.load(sha, None, frozenset())
    assert calls_ok(sandbox, OK)


def test_a_sidecar_digest_is_read_where_there_is_no_xattr(sandbox: Sandbox) -> None:
    sha = sha256_hex(OK)
    sandbox.compile(OK, sha, frozenset())
    path = sandbox.artifact_path(sha)
    os.removexattr(path, artifacts.XATTR)
    artifacts.sidecar(path).write_text(artifacts.digest(path.read_bytes()) + "\n")
    other = Sandbox(sandbox.cache_dir)
    try:
        other.load(sha, None, frozenset())
        artifacts.sidecar(path).write_text("0" * 64 + "\n")
        third = Sandbox(sandbox.cache_dir)
        try:
            with pytest.raises(FileNotFoundError):
                third.load(sha, None, frozenset())
            assert not artifacts.sidecar(path).exists()
        finally:
            third.close()
    finally:
        other.close()


def test_artifacts_of_pruned_and_deleted_versions_are_removed(sandbox: Sandbox, tmp_path: Path) -> None:
    # Wired as the composition root does it: the registry tells the sandbox which blobs it dropped.
    registry = Registry(tmp_path / "registry.lmdb", keep_versions=2, on_drop=sandbox.forget)
    try:
        mods = [constant(b"v%d" % i) for i in range(4)]
        for wasm in mods[:3]:
            sandbox.compile(wasm, sha256_hex(wasm), frozenset())
            registry.deploy("f", wasm, Manifest())
        assert not sandbox.artifact_path(sha256_hex(mods[0])).exists()  # v1 was pruned
        assert all(sandbox.artifact_path(sha256_hex(w)).exists() for w in mods[1:3])
        sandbox.compile(mods[3], sha256_hex(mods[3]), frozenset())
        registry.deploy("g", mods[2], Manifest())  # still used by g after f is gone
        registry.deploy("h", mods[3], Manifest())
        registry.delete("f")
        assert not sandbox.artifact_path(sha256_hex(mods[1])).exists()
        assert sandbox.artifact_path(sha256_hex(mods[2])).exists()
        registry.delete("g")
        registry.delete("h")
        assert not list(sandbox.cache_dir.glob("*.cwasm"))
    finally:
        registry.close()


def test_temp_files_of_dead_writers_are_removed(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cache.mkdir()
    proc = subprocess.Popen(["true"])  # its pid is one of a process that has exited
    proc.wait()
    gone = cache / f".tmp-{proc.pid}-abc.cwasm"
    alive = cache / f".tmp-{os.getppid()}-def.cwasm"
    odd = cache / ".tmp-xyz.cwasm"  # no pid: left by an older version
    for p in (gone, alive, odd):
        p.write_bytes(b"partial")
    Sandbox(cache).close()
    assert not gone.exists() and not odd.exists()
    assert alive.exists()


# --- on a real server ---


def boots(log: str) -> int:
    return log.count("Booting worker with pid")


def test_a_tampered_artifact_is_rebuilt_on_restart_and_reload(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    server = start_server(data_dir, workers=2)
    try:
        assert server.deploy("tamper", OK).status_code == 201
        path = next(p for p in (data_dir / "cache").glob(f"{sha256_hex(OK)}-*.cwasm"))
    finally:
        server.stop()
    overwrite_code(path)
    tampered = path.read_bytes()

    server = start_server(data_dir, workers=2)  # before the fix: every worker crashed at warm-up, in a loop
    try:
        with server.client() as c:
            for _ in range(10):
                r = c.get("/api/v1/edge/tamper", headers={"connection": "close"})
                assert (r.status_code, r.text) == (200, "ok")
        assert path.read_bytes() != tampered
        assert "is unusable" in server.log()
        assert boots(server.log()) == 2

        # While it serves: the artifact is replaced (renamed over, as a careless copy would) by the
        # tampered bytes with a digest record; new workers after SIGHUP must not load it.
        fake = path.with_name("copy.cwasm")
        fake.write_bytes(tampered)
        os.setxattr(fake, artifacts.XATTR, os.getxattr(path, artifacts.XATTR))
        os.replace(fake, path)
        old = server.worker_pids()
        os.kill(server.proc.pid, signal.SIGHUP)

        def replaced() -> bool:
            pids = server.worker_pids()
            return len(pids) == 2 and not pids & old

        poll("new workers", replaced, timeout=60)
        server.wait_ready(2)
        with server.client() as c:
            for _ in range(10):
                r = c.get("/api/v1/edge/tamper", headers={"connection": "close"})
                assert (r.status_code, r.text) == (200, "ok")
        assert boots(server.log()) == 4  # two at start, two after the reload: no boot loop
        assert path.read_bytes() != tampered
        assert server.proc.poll() is None
    except httpx.HTTPError:
        raise AssertionError(server.log()) from None
    finally:
        server.stop()
