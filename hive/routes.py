"""Which requests invoke a function: the one route table the Starlette app and the fast path share."""

from __future__ import annotations

import re

from hive.manifest import NAME_RE, RESERVED_NAMES

API_PREFIX = "/api/v1/edge"
SUPABASE_PREFIX = "/functions/v1"
INVOKE_METHODS = ("GET", "POST", "PUT", "PATCH", "HEAD", "OPTIONS")
# DELETE on the bare API path is the admin delete; Supabase-style paths take every method.
SUPABASE_METHODS = (*INVOKE_METHODS, "DELETE")

_NAME = NAME_RE.pattern.removeprefix("^").removesuffix("$").encode()
_API = re.compile(re.escape(API_PREFIX.encode()) + rb"/(" + _NAME + rb")")
_SUPA = re.compile(re.escape(SUPABASE_PREFIX.encode()) + rb"/(" + _NAME + rb")(?:/[\x21-\x7e]*)?")
_API_METHODS = frozenset(m.encode() for m in INVOKE_METHODS)
_SUPA_METHODS = frozenset(m.encode() for m in SUPABASE_METHODS)
_RESERVED = frozenset(n.encode() for n in RESERVED_NAMES)


def invoke_target(method: bytes, path: bytes) -> str | None:
    """The function that a raw path (no percent-escapes: those are Starlette's to decode) invokes, or
    None when the request is not an invocation by this table."""
    m = _API.fullmatch(path)
    if m is not None:
        return None if method not in _API_METHODS or m.group(1) in _RESERVED else m.group(1).decode("ascii")
    m = _SUPA.fullmatch(path)
    if m is None or method not in _SUPA_METHODS:
        return None
    return m.group(1).decode("ascii")
