"""CORS for a function, from its manifest's `cors` section: preflights answered by the server before
auth, and the headers added to the function's responses and to the server's own errors, so a browser
on another origin can call a protected function and read the status of a refusal.

Without a `cors` section a preflight still never meets auth: it reaches the function, which answers it
itself (as Supabase functions do with their shared cors.ts), and the server's own errors carry
`access-control-allow-origin: *` (they hold nothing private) so the browser sees the real status.
"""

from __future__ import annotations

from hive.abi import Headers
from hive.manifest import Cors
from hive.render import Reply

_ACAO = b"access-control-allow-origin"
_VARY = (b"vary", b"origin")


class CorsPolicy:
    __slots__ = ("any_origin", "origins", "methods", "headers", "expose", "max_age", "credentials")

    def __init__(self, cors: Cors) -> None:
        self.any_origin = "*" in cors.allow_origins
        self.origins = frozenset(o.rstrip("/").encode() for o in cors.allow_origins if o != "*")
        self.methods = ", ".join(m.upper() for m in cors.allow_methods).encode()
        self.headers = ", ".join(cors.allow_headers).encode()
        self.expose = ", ".join(cors.expose_headers).encode()
        self.max_age = str(cors.max_age).encode()
        self.credentials = cors.allow_credentials

    def allows(self, origin: bytes) -> bool:
        return self.any_origin or origin in self.origins

    def _origin_headers(self, origin: bytes) -> Headers:
        # With credentials a browser refuses "*": name the origin (and say the answer varies by it).
        if self.any_origin and not self.credentials:
            return [(_ACAO, b"*")]
        out = [(_ACAO, origin), _VARY]
        if self.credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        return out

    def preflight(self, origin: bytes, requested_headers: bytes | None) -> Reply:
        if not self.allows(origin):
            return Reply(204, [_VARY], b"")  # no CORS headers: the browser refuses the call
        headers = self._origin_headers(origin)
        headers.append((b"access-control-allow-methods", self.methods))
        allow = self.headers
        if allow == b"*" and self.credentials:  # "*" means nothing to a browser with credentials: echo the ask
            allow = requested_headers or b""
        if allow:
            headers.append((b"access-control-allow-headers", allow))
        headers.append((b"access-control-max-age", self.max_age))
        return Reply(204, headers, b"")

    def decorate(self, reply: Reply, origin: bytes) -> None:
        """Add the response headers for an allowed origin (to a guest's answer or the server's error)."""
        if not self.allows(origin) or any(k == _ACAO for k, _ in reply.headers):
            return
        reply.headers[:0] = self._origin_headers(origin)
        if self.expose:
            reply.headers.append((b"access-control-expose-headers", self.expose))


def open_error(reply: Reply) -> None:
    """The server's error for a function with no cors section (or none at all): readable by any origin."""
    if not any(k == _ACAO for k, _ in reply.headers):
        reply.headers.insert(0, (_ACAO, b"*"))
