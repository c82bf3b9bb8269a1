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
_EXPOSE = b"access-control-expose-headers"
_VARY = (b"vary", b"origin")
_RELAY = b"x-relay-error"
# What a script must read of the server's own errors: supabase-js tells a FunctionsRelayError by
# x-relay-error, and a 429/503 says when to retry. A browser hides any other header cross-origin.
_ERROR_EXPOSE = (b"x-relay-error", b"retry-after")
# "*" in allow_methods means nothing to a browser in credentials mode: the methods the invoke routes take.
_ALL_METHODS = b"GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"
_DEFAULT_PORT = {"http": ":80", "https": ":443"}


def normal_origin(origin: str) -> str:
    """An origin the way a browser serializes it: lowercase, no trailing slash, no default port."""
    o = origin.rstrip("/").lower()
    scheme = o.partition(":")[0]
    port = _DEFAULT_PORT.get(scheme)
    return o[: -len(port)] if port and o.endswith(port) else o


def _with(listed: bytes, extra: tuple[bytes, ...]) -> bytes:
    names = [n.strip() for n in listed.split(b",") if n.strip()] if listed else []
    have = {n.lower() for n in names}
    return b", ".join(names + [n for n in extra if n not in have])


class CorsPolicy:
    __slots__ = ("any_origin", "origins", "methods", "headers", "expose", "max_age", "credentials")

    def __init__(self, cors: Cors) -> None:
        self.any_origin = "*" in cors.allow_origins
        self.origins = frozenset(normal_origin(o).encode() for o in cors.allow_origins if o != "*")
        self.credentials = cors.allow_credentials
        methods = [m.upper() for m in cors.allow_methods]
        self.methods = _ALL_METHODS if "*" in methods and self.credentials else ", ".join(methods).encode()
        self.headers = ", ".join(cors.allow_headers).encode()
        self.expose = ", ".join(cors.expose_headers).encode()
        self.max_age = str(cors.max_age).encode()

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
        if any(k == _ACAO for k, _ in reply.headers):  # the guest answered CORS itself
            return
        if not self.allows(origin):
            if not self.any_origin:  # a cache must not hand this answer to an allowed origin
                reply.headers.append(_VARY)
            return
        expose = self.expose
        if expose == b"*" and self.credentials:  # "*" is a header name to a browser with credentials
            expose = b", ".join(dict.fromkeys(k for k, _ in reply.headers if not k.startswith(b"access-control-")))
        if any(k == _RELAY for k, _ in reply.headers) and expose != b"*":  # the server's own error
            expose = _with(expose, _ERROR_EXPOSE)
        reply.headers[:0] = self._origin_headers(origin)
        if expose:
            reply.headers.append((_EXPOSE, expose))


def open_error(reply: Reply) -> None:
    """The server's error for a function with no cors section (or none at all): readable by any origin."""
    if not any(k == _ACAO for k, _ in reply.headers):
        reply.headers.insert(0, (_ACAO, b"*"))
        reply.headers.append((_EXPOSE, b", ".join(_ERROR_EXPOSE)))


def open_preflight(requested_headers: bytes | None) -> Reply:
    """A preflight for a function that can't be found: let the browser send its request, which gets the
    server's error, readable (open_error) and marked, instead of a network error. Not cached, so a
    function deployed later with its own cors section is asked afresh."""
    headers = [(_ACAO, b"*"), (b"access-control-allow-methods", _ALL_METHODS)]
    if requested_headers:
        headers.append((b"access-control-allow-headers", requested_headers))
    headers.append((b"access-control-max-age", b"0"))
    return Reply(204, headers, b"")
