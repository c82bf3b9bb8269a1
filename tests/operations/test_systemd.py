"""systemd/edge-hive.service: `systemd-analyze verify` passes, the unit has the directives the design
relies on, and the server tells systemd READY=1 (Type=notify) once a worker has warmed every function (NotifyAccess=all)."""

from __future__ import annotations

import re
import shutil
import socket
import struct
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from hive.settings import load_settings
from tests.support import BIN, ROOT, start_server

pytestmark = pytest.mark.slow

UNIT = ROOT / "systemd" / "edge-hive.service"


@pytest.fixture(scope="session")
def systemd_analyze() -> str:
    """The systemd-analyze binary; Debian's systemd package is installed when it is missing."""
    if shutil.which("systemd-analyze") is None:
        r = subprocess.run(
            ["bash", str(ROOT / "scripts" / "toolchains" / "systemd.sh")],
            capture_output=True,
            text=True,
            timeout=900,
            stdin=subprocess.DEVNULL,
        )
        assert r.returncode == 0, r.stdout + r.stderr
    path = shutil.which("systemd-analyze")
    assert path, "systemd-analyze is still missing after scripts/toolchains/systemd.sh"
    return path


def parse_unit(text: str) -> dict[str, list[tuple[str, str]]]:
    """Sections of a unit file, each a list of (key, value) in order (keys may repeat)."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current = None
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        assert current is not None and "=" in line, f"not a unit line: {raw!r}"
        key, value = line.split("=", 1)
        current.append((key.strip(), value.strip()))
    return sections


def one(section: list[tuple[str, str]], key: str) -> str:
    values = [v for k, v in section if k == key]
    assert len(values) == 1, f"{key}= appears {len(values)} times"
    return values[0]


def seconds(span: str) -> float:
    """A systemd time span such as 45, 45s, 1min 30s, 2m."""
    units = {
        "": 1,
        "s": 1,
        "sec": 1,
        "second": 1,
        "seconds": 1,
        "m": 60,
        "min": 60,
        "minute": 60,
        "minutes": 60,
        "ms": 0.001,
        "msec": 0.001,
        "h": 3600,
        "hr": 3600,
        "hour": 3600,
    }
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", span)
    assert parts and re.fullmatch(r"(\s*\d+(?:\.\d+)?\s*[a-z]*)+\s*", span), span
    return sum(float(n) * units[u] for n, u in parts)


def verify(systemd_analyze: str, unit: Path) -> tuple[int, list[str]]:
    """Run `systemd-analyze verify`; return its exit code and every complaint about this unit.

    verify exits 0 even for unknown keys and unparsable values (systemd ignores those lines with a
    warning), so the complaints that name the unit count as errors too."""
    r = subprocess.run(
        [systemd_analyze, "verify", str(unit)], capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL
    )
    lines = [line for line in (r.stdout + r.stderr).splitlines() if line.strip()]
    return r.returncode, [line for line in lines if unit.name in line or str(unit) in line or r.returncode]


def local_copy(tmp_path: Path) -> Path:
    """The unit with ExecStart and WorkingDirectory pointed at this checkout's .venv.

    The real unit runs /opt/edge-hive/.venv/bin/edge-hive as the edge-hive user; neither exists on a
    development machine or in CI, and verify fails on a missing executable. Every other line, every
    hardening directive included, is kept as it is."""
    text = UNIT.read_text()
    exe = BIN / "edge-hive"
    assert exe.is_file()
    text, n = re.subn(r"^ExecStart=\S+/edge-hive\b", f"ExecStart={exe}", text, flags=re.M)
    assert n == 1
    text, n = re.subn(r"^WorkingDirectory=.*$", f"WorkingDirectory={ROOT}", text, flags=re.M)
    assert n == 1
    copy = tmp_path / UNIT.name
    copy.write_text(text)
    return copy


def test_unit_passes_systemd_analyze_verify(systemd_analyze: str, tmp_path: Path) -> None:
    # The unit as shipped: the only acceptable complaint is the missing install path on this machine.
    rc, complaints = verify(systemd_analyze, UNIT)
    installed = Path("/opt/edge-hive/.venv/bin/edge-hive").is_file()
    unexpected = [c for c in complaints if installed or "/opt/edge-hive/.venv/bin/edge-hive" not in c]
    assert not unexpected, "\n".join(complaints)

    copy = local_copy(tmp_path)
    rc, complaints = verify(systemd_analyze, copy)
    assert rc == 0 and not complaints, "\n".join(complaints)

    # Same directives as the shipped unit, apart from the two paths.
    def without_paths(path: Path) -> dict[str, list[tuple[str, str]]]:
        return {
            name: [(k, v) for k, v in lines if k not in {"ExecStart", "WorkingDirectory"}]
            for name, lines in parse_unit(path.read_text()).items()
        }

    assert without_paths(UNIT) == without_paths(copy)


def test_verify_catches_a_broken_unit(systemd_analyze: str, tmp_path: Path) -> None:
    """The check above really runs verify: a typo in a hardening directive or a bad value fails it."""
    copy = local_copy(tmp_path)
    text = copy.read_text()
    for broken in (
        text.replace("ProtectSystem=strict", "ProtectSystm=strict"),
        text.replace("Type=notify", "Type=notfy"),
        text.replace("KillMode=mixed", "KillMode=gently"),
    ):
        assert broken != text
        copy.write_text(broken)
        rc, complaints = verify(systemd_analyze, copy)
        assert complaints, broken


def test_unit_directives() -> None:
    unit = parse_unit(UNIT.read_text())
    assert set(unit) == {"Unit", "Service", "Install"}
    svc = unit["Service"]
    assert one(svc, "Type") == "notify"
    assert one(svc, "NotifyAccess") in {"main", "exec", "all"}
    assert one(svc, "ExecReload") == "/bin/kill -HUP $MAINPID"
    assert re.fullmatch(r"\S+/edge-hive serve( .*)?", one(svc, "ExecStart"))
    assert one(svc, "KillMode") == "mixed"
    assert one(svc, "StateDirectory") == "edge-hive"
    assert one(svc, "ProtectSystem") == "strict"
    assert one(svc, "NoNewPrivileges") == "yes"
    assert one(svc, "PrivateTmp") == "yes"
    assert re.fullmatch(r"\d+[KMGT]?", one(svc, "MemoryMax"))
    user = one(svc, "User")
    assert user and user not in {"root", "0"}
    assert one(unit["Install"], "WantedBy") == "multi-user.target"

    # The server's settings as the unit sets them: data in the state directory, and systemd waits
    # longer than gunicorn's graceful timeout (plus the drain) before it kills what is left.
    env = dict(v.split("=", 1) for k, v in svc if k == "Environment")
    settings = load_settings(env=env)
    assert env["HIVE_DATA_DIR"] == "/var/lib/" + one(svc, "StateDirectory")
    assert seconds(one(svc, "TimeoutStopSec")) > settings.graceful_timeout + settings.drain_ms / 1000


def test_server_reports_ready_to_notify_socket(tmp_path: Path) -> None:
    path = tmp_path / "notify.sock"
    assert len(str(path)) < 100  # sun_path limit
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(str(path))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)  # the kernel tells us the sender's PID
        server = start_server(tmp_path / "data", workers=2, env={"NOTIFY_SOCKET": str(path)})
        try:
            messages: list[tuple[int, str]] = []
            deadline = time.monotonic() + 30
            while not any("READY=1" in m.split("\n") for _, m in messages):
                remaining = deadline - time.monotonic()
                assert remaining > 0, f"no READY=1 on NOTIFY_SOCKET; got {messages}"
                sock.settimeout(remaining)
                try:
                    data, anc, _, _ = sock.recvmsg(4096, socket.CMSG_SPACE(struct.calcsize("iII")))
                except TimeoutError:
                    continue
                pid = next(
                    struct.unpack("iII", d[:12])[0]
                    for lvl, typ, d in anc
                    if lvl == socket.SOL_SOCKET and typ == socket.SCM_CREDENTIALS
                )
                messages.append((pid, data.decode()))
            sender, message = next((p, m) for p, m in messages if "READY=1" in m.split("\n"))
            # READY=1 comes from a worker once it has warmed every function (the master alone would
            # say it before any worker exists), and names the master as the main PID.
            assert f"MAINPID={server.proc.pid}" in message.split("\n"), message
            assert sender != server.proc.pid and psutil.Process(sender).ppid() == server.proc.pid
        finally:
            server.stop()
