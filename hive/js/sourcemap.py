"""Source maps (version 3) for JavaScript functions: stack frames of the bundle, `function.js:LINE:COL`,
rewritten to the author's files (`index.ts:LINE:COL`).

The map is decoded lazily, up to the highest line asked for, and only when a stack is shown: a function
that never throws never pays for it.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from bisect import bisect_right
from collections.abc import Callable

_B64 = {c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/")}
# The engine names the bundle function.js (hive/js/glue.c); QuickJS-ng's lines and columns are 1-based.
FRAME = re.compile(r"function\.js:(\d+):(\d+)")
INLINE = re.compile(
    rb"\n//[#@] sourceMappingURL=data:application/json(?:;charset=[\w-]+)?;base64,([A-Za-z0-9+/=]+)\s*$"
)

Segment = tuple[int, int, int, int]  # generated column, source index, original line, original column


def _vlq(text: str, pos: int, end: int) -> tuple[list[int], int]:
    """The numbers of one segment starting at `pos` (up to `end`, a ',' or ';' or the end)."""
    out = []
    value = shift = 0
    while pos < end:
        digit = _B64.get(text[pos], -1)
        if digit < 0:  # not base64: a broken map maps nothing here
            return [], end
        pos += 1
        value += (digit & 31) << shift
        if digit & 32:
            shift += 5
            continue
        out.append(-(value >> 1) if value & 1 else value >> 1)
        value = shift = 0
    return out, pos


class SourceMap:
    def __init__(self, doc: dict[str, object]) -> None:
        sources = doc.get("sources")
        mappings = doc.get("mappings")
        if doc.get("version") != 3 or not isinstance(sources, list) or not isinstance(mappings, str):
            raise ValueError("not a version 3 source map with sources and mappings")
        root = doc.get("sourceRoot") or ""
        self.sources = [f"{root}{s}" if isinstance(s, str) else "?" for s in sources]
        self._mappings = mappings
        self._lines: list[list[Segment]] = []  # decoded so far, by generated line (0-based)
        self._pos = 0
        self._state = [0, 0, 0]  # source, original line, original column: they carry across lines
        self._lock = threading.Lock()  # stacks may be shown from several guest threads

    @classmethod
    def from_json(cls, raw: bytes | str) -> SourceMap:
        doc = json.loads(raw)
        if not isinstance(doc, dict):
            raise ValueError("a source map is a JSON object")
        return cls(doc)

    def _decode_through(self, line: int) -> None:
        text = self._mappings
        n = len(text)
        src, oline, ocol = self._state
        while len(self._lines) <= line and self._pos <= n:
            end = text.find(";", self._pos)
            if end < 0:
                end = n
            segments: list[Segment] = []
            col = 0
            pos = self._pos
            while pos < end:
                stop = text.find(",", pos, end)
                if stop < 0:
                    stop = end
                nums, _ = _vlq(text, pos, stop)
                pos = stop + 1
                if not nums:
                    continue
                col += nums[0]
                if len(nums) >= 4:
                    src += nums[1]
                    oline += nums[2]
                    ocol += nums[3]
                    segments.append((col, src, oline, ocol))
            self._lines.append(segments)
            self._pos = end + 1
        self._state = [src, oline, ocol]

    def lookup(self, line: int, column: int) -> tuple[str, int, int] | None:
        """(source, line, column), 1-based, of a 1-based position in the bundle; None when unmapped."""
        if line < 1 or column < 1:
            return None
        with self._lock:
            self._decode_through(line - 1)
        if line - 1 >= len(self._lines):
            return None
        segments = self._lines[line - 1]
        i = bisect_right(segments, (column - 1, 1 << 62)) - 1
        if i < 0:
            if not segments:
                return None
            i = 0  # before the first mapping on the line: the line's first segment is the best guess
        _, src, oline, ocol = segments[i]
        if not 0 <= src < len(self.sources):
            return None
        return self.sources[src], oline + 1, ocol + 1

    def rewrite(self, text: str) -> str:
        """Every `function.js:L:C` in `text` pointed at the author's file, where the map knows it."""
        if "function.js:" not in text:
            return text

        def one(m: re.Match[str]) -> str:
            found = self.lookup(int(m.group(1)), int(m.group(2)))
            return m.group(0) if found is None else f"{found[0]}:{found[1]}:{found[2]}"

        return FRAME.sub(one, text)


def split_inline(source: bytes) -> tuple[bytes, bytes | None]:
    """The code without its trailing inline source map comment, and the map's JSON (or None)."""
    m = INLINE.search(source[-(1 << 26) :])
    if m is None:
        return source, None
    try:
        raw = base64.b64decode(m.group(1), validate=True)
    except ValueError:
        return source, None
    return source[: len(source) - len(m.group(0))] + b"\n", raw


def rewriting(
    sink: Callable[[str, int, str, int, str, str], None], smap: SourceMap
) -> Callable[[str, int, str, int, str, str], None]:
    """A guest-output sink (hive.sandbox.host.GuestContext.sink) that maps stack frames first. It runs
    inside the guest's fd_write: whatever a map holds, it never raises."""

    def mapped(function: str, version: int, stream: str, level: int, text: str, request_id: str) -> None:
        try:
            text = smap.rewrite(text)
        except Exception:  # a map that does not fit its bundle: the line as the engine wrote it
            pass
        sink(function, version, stream, level, text, request_id)

    return mapped
