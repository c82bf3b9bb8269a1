"""The function log: one JSON object a line, shared by every worker (O_APPEND), read by
`GET /api/v1/edge/{function}/logs` and `edge-hive function logs`."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import msgspec

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


class FunctionLog:
    def __init__(self, path: str | Path, max_bytes: int = 64 << 20) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self._writes = 0
        self._fd = self._open()

    def _open(self) -> int:
        return os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)

    def close(self) -> None:
        os.close(self._fd)

    @staticmethod
    def line(record: dict[str, Any]) -> bytes:
        return _encode(record) + b"\n"

    def write(self, record: dict[str, Any]) -> None:
        self.write_lines(self.line(record), 1)

    def write_lines(self, data: bytes, count: int) -> None:
        """Whole lines in one write(): O_APPEND writes to a regular file do not interleave, so lines
        from several workers never mix."""
        written = os.write(self._fd, data)
        while written < len(data):  # short only on a full disk, which then raises
            data = data[written:]
            written = os.write(self._fd, data)
        before, self._writes = self._writes, self._writes + count
        if before // 1000 != self._writes // 1000:
            self._maybe_rotate()

    def _maybe_rotate(self) -> None:
        try:
            current = os.stat(self.path)
        except FileNotFoundError:
            current = None
        mine = os.fstat(self._fd)
        if current is None or (current.st_ino, current.st_dev) != (mine.st_ino, mine.st_dev):
            os.close(self._fd)  # another worker rotated it
            self._fd = self._open()
        elif mine.st_size > self.max_bytes:
            os.replace(self.path, self.path.with_suffix(self.path.suffix + ".1"))
            os.close(self._fd)
            self._fd = self._open()


def now_iso() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def tail(path: str | Path, function: str, lines: int, scan_bytes: int = 8 << 20) -> tuple[list[dict[str, Any]], int]:
    """The last `lines` records of `function`, and the offset to follow the file from."""
    path = Path(path)
    out: list[dict[str, Any]] = []
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return [], 0
    with open(path, "rb") as f:
        start = max(0, size - scan_bytes)
        f.seek(start)
        data = f.read(size - start)
    chunk = data.split(b"\n")
    if start:
        chunk = chunk[1:]  # the first line may be cut
    needle = b'"function":' + _encode(function)
    for raw in chunk:
        if needle in raw:
            try:
                out.append(_decode(raw))
            except msgspec.DecodeError:
                continue
    return out[-lines:], size


def read_from(path: str | Path, function: str, offset: int) -> tuple[list[dict[str, Any]], int]:
    """Complete records of `function` appended since `offset`, and the new offset."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            if os.fstat(f.fileno()).st_size < offset:
                offset = 0  # rotated
            f.seek(offset)
            data = f.read()
    except FileNotFoundError:
        return [], 0
    end = data.rfind(b"\n") + 1
    needle = b'"function":' + _encode(function)
    records = []
    for raw in data[:end].split(b"\n"):
        if needle in raw:
            try:
                records.append(_decode(raw))
            except msgspec.DecodeError:
                continue
    return records, offset + end


def format_record(rec: dict[str, Any]) -> str:
    """One log record as `edge-hive function logs` and `edge-hive dev` print it."""
    err = f" {rec['error']}" if rec.get("error") else ""
    head = f"{rec.get('ts', '?')} v{rec.get('version', '?')}"
    kind = rec.get("kind")
    if kind == "invocation":
        return (
            f"{head} {rec.get('status')} {rec.get('duration_us')}us pid={rec.get('pid')} "
            f"req={rec.get('request_id')}{err}"
        )
    if kind == "outbound":
        return (
            f"{head} fetch {rec.get('method')} {rec.get('host')} {rec.get('status') or '-'} "
            f"{rec.get('ms')}ms req={rec.get('request_id')}{err}"
        )
    return f"{head} {rec.get('stream')}/{rec.get('level')} req={rec.get('request_id')}: {rec.get('text')}"
