"""File modes outside systemd (issue 11, item 10): the data dir is 0700 and everything the server writes
in it is readable by its own user only (the registry holds config values and API keys)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.guests import guest
from tests.support import start_server


def modes(root: Path) -> dict[str, int]:
    out = {".": stat.S_IMODE(root.stat().st_mode)}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            out[str(p.relative_to(root))] = stat.S_IMODE(p.lstat().st_mode)
    return out


def test_the_data_dir_is_private_to_the_server(tmp_path: Path) -> None:
    os.umask(0o022)  # an ordinary login shell's umask: the server must not rely on a stricter one
    data_dir = tmp_path / "data"
    data_dir.mkdir(mode=0o755)  # as an operator might have made it, or an older version did
    server = start_server(data_dir, workers=2, token=None)  # the token file is written too
    server.token = (data_dir / "admin.token").read_text().strip()
    try:
        assert server.deploy("modes", guest("(i64.const 0)")).status_code == 201
        with server.client() as c:
            c.post("/api/v1/edge/modes", content=b"x")  # invocation log lines and metrics files
    finally:
        server.stop()
    found = modes(data_dir)
    for want in (
        "registry.lmdb",
        "registry.lmdb/data.mdb",
        "ratelimit.lmdb",
        "cache",
        "logs",
        "metrics",
        "admin.token",
    ):
        assert any(name == want or name.startswith(want + "/") for name in found), (want, sorted(found))
    assert any(name.endswith(".cwasm") for name in found)
    assert any(name.startswith("metrics/") for name in found)
    assert found["."] == 0o700
    readable_by_others = {name: oct(mode) for name, mode in found.items() if mode & 0o077}
    assert not readable_by_others
