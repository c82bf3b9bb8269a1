"""A strict URL reader for fetch: one unambiguous (scheme, host, port, target) or bad_url.

Different URL parsers disagree on odd inputs, and an SSRF check that reads a URL one way while
the client reads it another is no check. So anything parsers disagree on is refused outright
rather than interpreted: userinfo ("https://allowed.com@evil.com"), backslashes (WHATWG reads
"\\" as "/", Python's urlsplit does not), whitespace and control characters (WHATWG silently
strips tabs and newlines), percent-escapes in the host, empty ports. The authority ends at the
first "/", "?" or "#", so "https://evil.com#@allowed.com" is evil.com. The host is read by
hive.outbound.hosts (IDNA, numeric IPv4 forms, IPv6 literals).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from urllib.parse import quote, urljoin

from hive.outbound.errors import FetchRefused
from hive.outbound.hosts import Host, bracketed, normalize_host
from hive.outbound.rules import DEFAULT_PORTS, parse_port

MAX_URL_BYTES = 8192
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):")
_PORT_RE = re.compile(r"^[0-9]{1,5}$")
# Printable ASCII that may stand in a path or query as is; the rest of printable non-ASCII is
# percent-encoded as UTF-8, as browsers do.
_SAFE = "/?:@!$&'()*+,;=-._~%[]|^`{}\"<>"


@dataclass(frozen=True)
class Url:
    scheme: str
    host: Host
    port: int
    target: str  # path and query, never empty, fragment dropped

    @property
    def origin(self) -> tuple[str, str, int]:
        return (self.scheme, self.host.name, self.port)

    @property
    def authority(self) -> str:
        """For the Host header: the port only when it is not the scheme's default."""
        host = bracketed(self.host)
        return host if self.port == DEFAULT_PORTS[self.scheme] else f"{host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.scheme}://{self.authority}{self.target}"


def _bad(url: str, why: str) -> FetchRefused:
    shown = url if len(url) <= 200 else url[:200] + "..."
    return FetchRefused("bad_url", f"{shown!r}: {why}; pass an absolute http:// or https:// URL")


@functools.lru_cache(maxsize=1024)
def _parse_cached(url: str) -> Url:
    return _parse(url)


def parse_url(url: str) -> Url:
    """A pure function of the text, so its answers are kept (a function fetches the same few URLs);
    a refusal is raised again each time, never kept."""
    if not isinstance(url, str):
        raise _bad(str(url)[:200], f"not a string of at most {MAX_URL_BYTES} bytes")
    return _parse_cached(url) if len(url) <= 512 else _parse(url)


def _parse(url: str) -> Url:
    if not isinstance(url, str) or len(url.encode("utf-8", "surrogatepass")) > MAX_URL_BYTES:
        raise _bad(str(url)[:200], f"not a string of at most {MAX_URL_BYTES} bytes")
    if any(c <= " " or c == "\x7f" or "\x80" <= c <= "\x9f" for c in url):
        raise _bad(url, "contains whitespace or a control character (percent-encode it)")
    if "\\" in url:
        raise _bad(url, "contains a backslash, which URL parsers read differently (use '/')")
    m = _SCHEME_RE.match(url)
    if m is None or url[m.end() : m.end() + 2] != "//":
        raise _bad(url, "not an absolute URL of the form scheme://host/path")
    scheme = m[1].lower()
    if scheme not in DEFAULT_PORTS:
        raise _bad(url, f"scheme {scheme!r} is not http or https")
    rest = url[m.end() + 2 :]
    end = min((i for i in (rest.find(c) for c in "/?#") if i >= 0), default=len(rest))
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        raise _bad(url, "credentials in the URL are not accepted (send an Authorization header)")
    if authority.startswith("["):
        close = authority.find("]")
        if close < 0:
            raise _bad(url, "unterminated IPv6 literal")
        raw_host, after = authority[: close + 1], authority[close + 1 :]
    else:
        raw_host, colon, port_text = authority.partition(":")
        after = colon + port_text
    if after and not (after.startswith(":") and _PORT_RE.fullmatch(after[1:])):
        raise _bad(url, "the port must be 1-65535 after a single ':'")
    if "%" in raw_host or "*" in raw_host:
        raise _bad(url, "the host contains '%' or '*'")
    try:
        port = parse_port(after[1:] if after else None, scheme)
        host = normalize_host(raw_host)
    except ValueError as e:
        raise _bad(url, str(e)) from None
    target = tail.partition("#")[0]
    if not target.startswith("/"):
        target = "/" + target  # "http://h?q" asks for "/?q"
    try:
        return Url(scheme, host, port, quote(target, safe=_SAFE))
    except UnicodeEncodeError:
        raise _bad(url, "the path or query is not valid Unicode") from None


def resolve_location(base: Url, location: str) -> Url:
    """A redirect's Location, relative or absolute, read by the same strict parser."""
    if any(c <= " " or c == "\\" for c in location):
        raise _bad(location, "the redirect Location contains whitespace, a control character or a backslash")
    return parse_url(urljoin(str(base), location))
