"""Compiled artifacts (`<cache>/<sha256>-<fingerprint>.cwasm`), each with the digest it was written with.

wasmtime runs a deserialized artifact's machine code as it is, so a changed byte (a bad disk, a
stray write, a tampering hand) crashes every worker that loads it, or worse. Each artifact is
written atomically (a `.tmp-<pid>-*` file, then a rename) with its BLAKE2b digest in an extended
attribute, or beside it in `<name>.digest` where the file system has none; a loader checks the
digest before wasmtime sees the file, and a mismatch deletes it (the caller recompiles from the
registry). The digest guards against corruption and blind changes, not against someone who can
write the data dir (they control the server anyway). An artifact changed in place while workers have
it mapped still reaches them: nothing in Edge Hive writes artifacts in place.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import time
from pathlib import Path

from hive.errors import InsufficientStorage

XATTR = "user.edge_hive.blake2b"
SIDECAR = ".digest"
TMP_PREFIX = ".tmp-"
_CHUNK = 1 << 20
# Where a file system has no user xattrs (or refuses them), the sidecar file holds the digest.
_NO_XATTR = {errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES, errno.ENOSYS}


def no_space(e: OSError, where: Path) -> InsufficientStorage | None:
    """The 507 for a write that failed because the disk (or the user's quota) is full."""
    if e.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    return InsufficientStorage(
        f"no space left on the disk of {where} to write the compiled module: free some space, then deploy again"
    )


def digest(data: bytes | memoryview) -> str:
    return hashlib.blake2b(data, digest_size=32).hexdigest()


def fd_digest(fd: int) -> str:
    h = hashlib.blake2b(digest_size=32)
    offset = 0
    while chunk := os.pread(fd, _CHUNK, offset):
        h.update(chunk)
        offset += len(chunk)
    return h.hexdigest()


def sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR)


def tmp_file(cache_dir: Path) -> Path:
    """A new empty temp file for an artifact, named with this process's pid (see sweep_tmp)."""
    cache_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # again: someone may have removed it
    fd, tmp = tempfile.mkstemp(dir=cache_dir, prefix=f"{TMP_PREFIX}{os.getpid()}-", suffix=".cwasm")
    os.close(fd)
    return Path(tmp)


def write_tmp(tmp: Path, data: bytes) -> None:
    """The artifact's bytes and digest into its temp file (publish() renames it into place)."""
    with open(tmp, "wb") as f:
        f.write(data)
    record_digest(tmp, digest(data))


def record_digest(path: Path, value: str) -> None:
    try:
        os.setxattr(path, XATTR, value.encode())
    except OSError as e:
        if e.errno not in _NO_XATTR:
            raise
        sidecar(path).write_text(value + "\n")


def publish(tmp: Path, path: Path) -> None:
    """Move a written temp file (and its sidecar, if any) into place, atomically for readers."""
    side = sidecar(tmp)
    if side.exists():
        os.replace(side, sidecar(path))
    else:
        sidecar(path).unlink(missing_ok=True)  # the xattr holds it; an old sidecar must not disagree
    os.replace(tmp, path)


def write(cache_dir: Path, path: Path, data: bytes) -> None:
    tmp = tmp_file(cache_dir)
    try:
        write_tmp(tmp, data)
        publish(tmp, path)
    except BaseException:
        discard(tmp)
        raise


def recorded_digest(fd: int, path: Path) -> str | None:
    try:
        return os.getxattr(fd, XATTR).decode()
    except OSError as e:
        if e.errno != errno.ENODATA and e.errno not in _NO_XATTR:
            raise
    try:
        return sidecar(path).read_text().strip()
    except FileNotFoundError:
        return None


def problem(fd: int, path: Path) -> str | None:
    """Why the open artifact must not be loaded, or None when its digest matches."""
    want = recorded_digest(fd, path)
    if want is None:
        return "has no recorded digest"
    if fd_digest(fd) != want:
        return "does not match the digest recorded when it was written"
    return None


def discard(path: Path) -> None:
    path.unlink(missing_ok=True)
    sidecar(path).unlink(missing_ok=True)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_tmp(cache_dir: Path, max_age_s: float = 86_400) -> list[Path]:
    """Remove temp files left by processes that died while writing (or older than a day)."""
    removed: list[Path] = []
    now = time.time()
    try:
        entries = list(os.scandir(cache_dir))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TMP_PREFIX):
            continue
        pid_text = entry.name[len(TMP_PREFIX) :].split("-", 1)[0]
        pid = int(pid_text) if pid_text.isdigit() else None
        if pid == os.getpid():
            continue
        try:
            stale = pid is None or not _pid_alive(pid) or now - entry.stat().st_mtime > max_age_s
        except FileNotFoundError:
            continue
        if stale:
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    return removed
