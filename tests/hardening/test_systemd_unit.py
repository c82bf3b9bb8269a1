"""The systemd unit's sandbox (issue 11, item 11): a system call filter the server really runs under, a
private /proc view, UMask=0077, loopback-only IP traffic, and its `systemd-analyze security` exposure.

systemd is not PID 1 here, so the unit cannot be started; instead the server runs under a seccomp
filter built (with libseccomp) from exactly the calls the unit's SystemCallFilter= lines allow, as
systemd would build it, except that a call outside the set kills the process (the unit says EPERM):
the test proves the server needs nothing else."""

from __future__ import annotations

import ctypes.util
import functools
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from tests.guests import RESP, data, guest, packed
from tests.operations.test_systemd import UNIT, local_copy, one, parse_unit, systemd_analyze, verify
from tests.support import ADMIN_TOKEN, BIN, Server, free_port, poll

__all__ = ["systemd_analyze"]  # the fixture, shared with tests/operations/test_systemd.py

pytestmark = pytest.mark.slow

LIBSECCOMP = ctypes.util.find_library("seccomp")


def service() -> list[tuple[str, str]]:
    return parse_unit(UNIT.read_text())["Service"]


def test_the_unit_has_the_sandbox_directives() -> None:
    svc = service()
    filters = [v for k, v in svc if k == "SystemCallFilter"]
    assert filters[0] == "@system-service" and "~@privileged" in filters
    assert one(svc, "SystemCallErrorNumber") == "EPERM"
    assert one(svc, "SystemCallArchitectures") == "native"
    assert one(svc, "ProtectProc") == "invisible"
    assert one(svc, "UMask") == "0077"
    assert one(svc, "IPAddressDeny") == "any"
    assert "localhost" in one(svc, "IPAddressAllow").split()
    assert one(svc, "RestartPreventExitStatus") == "3"  # a worker that cannot boot: do not restart
    assert not [v for k, v in svc if k == "MemoryDenyWriteExecute"]  # wasmtime makes code executable


def test_the_unit_verifies_and_its_exposure_is_low(systemd_analyze: str, tmp_path: Path) -> None:
    copy = local_copy(tmp_path)
    rc, complaints = verify(systemd_analyze, copy)
    assert rc == 0 and not complaints, "\n".join(complaints)
    r = subprocess.run(
        [systemd_analyze, "security", "--offline=yes", str(copy)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", r.stdout + r.stderr)
    assert match, r.stdout + r.stderr
    assert float(match.group(1)) <= 2.0, r.stdout  # docs/security.md states the figure (1.4 with systemd 252)


@functools.cache
def expand(systemd_analyze: str, group: str) -> frozenset[str]:
    """The system calls in a systemd syscall group, nested groups included."""
    out = subprocess.run(
        [systemd_analyze, "syscall-filter", group], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        word = line.strip()
        if not word or word.startswith("#"):
            continue
        names |= expand(systemd_analyze, word) if word.startswith("@") else {word}
    return frozenset(names)


def allowed_calls(systemd_analyze: str) -> set[str]:
    """What the unit's SystemCallFilter= lines allow: the first lists, each `~` line takes away."""
    allowed: set[str] = set()
    for value in (v for k, v in service() if k == "SystemCallFilter"):
        deny = value.startswith("~")
        calls = set().union(
            *(expand(systemd_analyze, w) if w.startswith("@") else {w} for w in value.lstrip("~").split())
        )
        allowed = allowed - calls if deny else allowed | calls
    return allowed


LAUNCHER = """
import ctypes, os, sys
lib = ctypes.CDLL(sys.argv[1], use_errno=True)
lib.seccomp_init.restype = ctypes.c_void_p
lib.seccomp_init.argtypes = [ctypes.c_uint32]
lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint]
lib.seccomp_load.argtypes = [ctypes.c_void_p]
ctx = lib.seccomp_init(0x80000000)  # SCMP_ACT_KILL_PROCESS for anything not allowed
for name in sys.argv[2].split():
    nr = lib.seccomp_syscall_resolve_name(name.encode())
    if nr >= 0 and lib.seccomp_rule_add(ctx, 0x7FFF0000, nr, 0) != 0:  # SCMP_ACT_ALLOW
        sys.exit(f"seccomp_rule_add({name}) failed")
if lib.seccomp_load(ctx) != 0:
    sys.exit("seccomp_load failed")
os.execv(sys.argv[3], sys.argv[3:])
"""


def constant(body: bytes) -> bytes:
    from hive import abi

    raw = abi.encode_response(abi.Response(200, [(b"content-type", b"text/plain")], body))
    return guest(packed(RESP, len(raw)), data(RESP, raw))


@pytest.mark.skipif(LIBSECCOMP is None, reason="needs libseccomp (Debian: libseccomp2)")
def test_the_server_runs_under_the_units_system_call_filter(systemd_analyze: str, tmp_path: Path) -> None:
    calls = allowed_calls(systemd_analyze)
    assert "chown" not in calls and "setrlimit" in calls and "prctl" in calls
    data_dir, port = tmp_path / "data", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HIVE_")}
    env["HIVE_ADMIN_TOKEN"] = ADMIN_TOKEN
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                LAUNCHER,
                str(LIBSECCOMP),
                " ".join(sorted(calls)),
                str(BIN / "edge-hive"),
                "serve",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "2",
                "--data-dir",
                str(data_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
            cwd=tmp_path,
        )
    server = Server(proc, f"http://127.0.0.1:{port}", data_dir, log_path)
    try:
        server.wait_ready(2)
        assert server.deploy("filtered", constant(b"filtered")).status_code == 201  # the compiler subprocess too
        with server.client() as c:
            assert c.get("/api/v1/edge/filtered").text == "filtered"
            old = server.worker_pids()
            os.kill(proc.pid, signal.SIGHUP)  # a reload forks new workers
            poll("new workers", lambda: len(server.worker_pids() - old) == 2, timeout=60)
            server.wait_ready(2)
            assert c.get("/api/v1/edge/filtered", headers={"connection": "close"}).text == "filtered"
        workers = server.worker_pids()
        os.kill(proc.pid, signal.SIGKILL)  # the workers' PR_SET_PDEATHSIG (prctl) must be allowed too
        proc.wait(timeout=10)

        def gone() -> bool:
            return not any(psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in workers)

        poll("the workers to follow the master", gone, timeout=30, interval=0.05)
        text = log_path.read_text(errors="replace")
        assert "SIGSYS" not in text and "Bad system call" not in text, text
    finally:
        server.stop()
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # any worker left of the server's process group
        except ProcessLookupError:
            pass
