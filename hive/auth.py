"""The admin token: from HIVE_ADMIN_TOKEN, or generated once into the data dir (mode 0600).

The token never stays in a server process's environment (where /proc/<pid>/environ would show it
for the life of the process): `edge-hive serve` moves it from HIVE_ADMIN_TOKEN into a pipe before it
execs gunicorn, the master reads it once into `held_token`, and workers inherit it by fork.
"""

from __future__ import annotations

import hmac
import os
import secrets
import time
from pathlib import Path

TOKEN_FILE = "admin.token"
TOKEN_ENV = "HIVE_ADMIN_TOKEN"
TOKEN_FD_ENV = "HIVE_ADMIN_TOKEN_FD"

_held: str | None = None


def hand_over(env: dict[str, str]) -> None:
    """Before exec: move the token from `env` into an inheritable pipe named by HIVE_ADMIN_TOKEN_FD."""
    token = env.pop(TOKEN_ENV, "")
    if not token:
        return
    r, w = os.pipe()
    os.write(w, token.encode())  # far below the pipe's capacity
    os.close(w)
    os.set_inheritable(r, True)
    env[TOKEN_FD_ENV] = str(r)


def take_from_environment() -> str | None:
    """In the server (once; later calls return the same): the handed-over token, or HIVE_ADMIN_TOKEN,
    removed from os.environ so that no child process inherits it."""
    global _held
    fd = os.environ.pop(TOKEN_FD_ENV, None)
    if fd is not None:
        with os.fdopen(int(fd), "rb") as f:
            _held = f.read().decode().strip() or None
    token = os.environ.pop(TOKEN_ENV, None)
    if token and _held is None:
        _held = token
    return _held


def held_token() -> str | None:
    return _held


def token_path(data_dir: str | Path) -> Path:
    return Path(data_dir) / TOKEN_FILE


def ensure_admin_token(data_dir: str | Path, configured: str | None) -> tuple[str, Path | None]:
    """The token in force and the file it lives in (None when it came from the environment)."""
    if configured:
        return configured, None
    path = token_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass  # another process won the race, or an earlier start made it
    else:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return read_token_file(path), path


def read_token_file(path: Path) -> str:
    # The writer may be between create and write; the token is one short line, so retry briefly.
    for _ in range(100):
        token = path.read_text().strip()
        if token:
            return token
        time.sleep(0.01)
    raise RuntimeError(f"admin token file {path} is empty")


def bearer_matches(header: str | None, token: str) -> bool:
    if not header:
        return False
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(value.strip().encode(), token.encode())
