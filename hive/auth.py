"""The admin token: from HIVE_ADMIN_TOKEN, or generated once into the data dir (mode 0600)."""

from __future__ import annotations

import hmac
import os
import secrets
import time
from pathlib import Path

TOKEN_FILE = "admin.token"


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
