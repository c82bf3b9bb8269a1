"""Outbound: the worker's HTTP client for guests' fetches, on the worker's event loop.

One Outbound per worker process, created after fork. Each fetch is checked against the function's
allowed_hosts before anything is sent, and again on every redirect hop; the address connected to
is checked by hive.outbound.network. Certificates are always verified.

The client is aiohttp (its C HTTP parser, per-host keep-alive pools) on the worker's own loop:
httpcore, used before, spent about 1 ms of CPU per request on its anyio locks, shields and pool
scans, ten times aiohttp's cost, on the core the worker's other requests share.

Connection pools: one aiohttp session (its TCPConnector) per (function, allowed_hosts) per worker.
A pooled connection was checked under the rules of the pool that made it, so it must never serve a
function whose rules differ: a connection to a name that resolved to 127.0.0.1, made for a function
granted "http://127.0.0.1:PORT", would otherwise carry another function's request to loopback with
no check at all (a reused connection is not connected again). Keying by the rules as well as the
function means a redeploy that narrows allowed_hosts starts from fresh connections too; the
pools a function had under its older rules are closed once idle.

No environment proxies, no cookie jar, no decompression (a guest that asks for gzip gets gzip), no
default Accept or Content-Type: the client does exactly what the guest asked, within its limits.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import certifi
from yarl import URL

from hive import pacing
from hive.outbound.addresses import AddressPolicy
from hive.outbound.errors import FetchRefused, OutboundSetupError
from hive.outbound.limits import (
    MAX_REDIRECTS,
    MAX_REQUEST_HEADER_BYTES,
    MAX_REQUEST_HEADERS,
    FetchBudget,
    FetchLimits,
)
from hive.outbound.network import CheckedResolver, Resolver, check_literal, system_resolver
from hive.outbound.rules import HostRule, match
from hive.outbound.urls import Url, parse_url, resolve_location

USER_AGENT = "edge-hive"
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
# Headers that describe one connection, or that the client owns (Host, framing): never taken from
# the guest, never handed back to it.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-connection",
        "transfer-encoding",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
        "proxy-authenticate",
        "host",
        "content-length",
        "expect",
    }
)
CREDENTIAL_HEADERS = frozenset({"authorization", "cookie", "proxy-authorization"})
BODY_HEADERS = frozenset({"content-type", "content-encoding", "content-language", "content-location"})


@dataclass(frozen=True)
class FetchRequest:
    method: str
    url: str
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""


@dataclass(frozen=True)
class FetchRecord:
    """One outbound HTTP exchange (or one refusal) for the function log and metrics."""

    function: str
    method: str
    host: str  # canonical host of the hop, "" if the URL did not parse
    rule: str | None  # the allowed_hosts entry that matched: a bounded metrics label
    status: int | None  # None when refused or failed before a response
    code: str | None  # the FetchRefused code, None on success
    ms: float
    bytes_out: int
    bytes_in: int
    address: str | None = None  # the IP actually connected to


@dataclass(frozen=True)
class FetchResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    url: str  # after redirects
    ms: float
    records: tuple[FetchRecord, ...] = ()


@dataclass
class _Pool:
    session: aiohttp.ClientSession
    policy: AddressPolicy
    users: int = 0
    retired: bool = False
    last_used: float = 0.0


class _Trace:
    """Collects one record per hop; a failure records the hop in progress."""

    def __init__(self, function: str, method: str, hook: Callable[[FetchRecord], None] | None) -> None:
        self.function, self.method, self.hook = function, method, hook
        self.host = ""
        self.rule: str | None = None  # the allowed_hosts entry of the hop in progress
        self.started = time.monotonic()
        self.records: list[FetchRecord] = []

    def begin(self, method: str, url: Url, rule: HostRule | None) -> None:
        self.method, self.host, self.rule = method, url.host.name, rule.entry if rule else None
        self.started = time.monotonic()

    def end(
        self, status: int | None, code: str | None, bytes_out: int = 0, bytes_in: int = 0, address: str | None = None
    ) -> None:
        record = FetchRecord(
            self.function,
            self.method,
            self.host,
            self.rule,
            status,
            code,
            (time.monotonic() - self.started) * 1000,
            bytes_out,
            bytes_in,
            address,
        )
        self.records.append(record)
        if self.hook is not None:
            self.hook(record)


def _decode(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


def _prepare(req: FetchRequest, limits: FetchLimits) -> tuple[str, list[tuple[str, str]], bytes]:
    method = req.method.upper() if isinstance(req.method, str) else ""
    if not _TOKEN_RE.fullmatch(method) or method == "CONNECT":
        raise FetchRefused(
            "bad_request", f"method {str(req.method)[:40]!r} is not an HTTP method (CONNECT is not allowed)"
        )
    body = bytes(req.body)
    if len(body) > limits.max_request_bytes:
        raise FetchRefused(
            "request_too_large",
            (
                f"the request body is {len(body)} bytes, over the limit of {limits.max_request_bytes}; "
                "send less or raise the function's max_request_bytes limit"
            ),
        )
    if len(req.headers) > MAX_REQUEST_HEADERS:
        raise FetchRefused(
            "request_too_large", f"{len(req.headers)} request headers, over the limit of {MAX_REQUEST_HEADERS}"
        )
    named_by_connection: set[str] = set()
    headers: list[tuple[str, str]] = []
    size = 0
    for name, value in req.headers:
        if not isinstance(name, str) or not isinstance(value, str) or not _TOKEN_RE.fullmatch(name):
            raise FetchRefused("bad_request", f"header name {str(name)[:40]!r} is not a valid HTTP token")
        if any((c < " " and c != "\t") or c == "\x7f" for c in value):
            raise FetchRefused("bad_request", f"header {name!r} has a control character (CR, LF, NUL...) in its value")
        size += len(name) + len(value.encode("utf-8", "surrogateescape")) + 4
        lower = name.lower()
        if lower == "connection":
            named_by_connection.update(t.strip().lower() for t in value.split(","))
        if lower not in HOP_BY_HOP:
            headers.append((lower, value.strip()))
    if size > MAX_REQUEST_HEADER_BYTES:
        raise FetchRefused(
            "request_too_large", f"request headers total {size} bytes, over the limit of {MAX_REQUEST_HEADER_BYTES}"
        )
    return method, [(n, v) for n, v in headers if n not in named_by_connection], body


def _is_tls(e: BaseException) -> bool:
    seen: BaseException | None = e
    for _ in range(8):  # bounded walk of the cause chain
        if seen is None:
            return False
        if isinstance(seen, ssl.SSLError | ssl.CertificateError):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


# What a request or a body read can raise that is the network's or the upstream's doing.
_NETWORK_ERRORS = (aiohttp.ClientError, OSError)


def _refusal(e: BaseException, url: Url, limits: FetchLimits) -> FetchRefused:
    where = f"{url.scheme}://{url.authority}"
    if isinstance(e, aiohttp.ConnectionTimeoutError):  # resolve + connect + TLS, or a full pool
        return FetchRefused(
            "connect_timeout",
            (
                f"connecting to {where} took longer than {limits.connect_timeout_ms} ms; "
                "check the upstream or raise the function's connect_timeout_ms limit"
            ),
        )
    if isinstance(e, TimeoutError):
        return FetchRefused("timeout", f"{where} did not answer within {limits.timeout_ms} ms (timeout_ms)")
    if isinstance(e, aiohttp.ClientSSLError) or _is_tls(e):
        detail = getattr(e, "certificate_error", None) or getattr(e, "os_error", None) or e.__cause__ or e
        return FetchRefused(
            "tls_error",
            (
                f"TLS with {where} failed: {detail}; certificates are always verified "
                "(an upstream with a private CA needs that CA in the server's outbound_ca_file)"
            ),
        )
    if isinstance(e, aiohttp.ClientConnectorError):
        return FetchRefused("connect_failed", f"could not connect to {where}: {e.os_error}")
    return FetchRefused("protocol_error", f"{where} broke the HTTP exchange: {e or type(e).__name__}")


# The address each pooled connection goes to, by its protocol object: read once per connection
# (uvloop's get_extra_info("peername") is a getpeername() system call each time).
_peers: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()


def _completions() -> asyncio.Future[None] | None:
    return pacing.turns("fetch completions").take()


class _Response(aiohttp.ClientResponse):
    """Notes the address its connection goes to before aiohttp may hand the connection back to the
    pool (a response with an empty body is complete as soon as its head is read), and waits for its
    turn once its head is read (hive.pacing: responses that arrive together go on a few per loop turn)."""

    peer: str | None = None

    async def start(self, connection: Any) -> _Response:
        protocol = connection.protocol
        try:
            self.peer = _peers[protocol]
        except (KeyError, TypeError):
            transport = connection.transport
            addr = transport.get_extra_info("peername") if transport is not None else None
            self.peer = str(addr[0]) if addr else None
            if protocol is not None:
                _peers[protocol] = self.peer
        await super().start(connection)
        turn = _completions()
        if turn is not None:
            await turn
        return self


# Headers aiohttp would add on its own: the guest's request goes out as the guest made it.
_NO_AUTO_HEADERS = ("Accept", "Accept-Encoding", "User-Agent", "Content-Type")


class Outbound:
    def __init__(
        self,
        ca_file: str | None = None,
        resolver: Resolver | None = None,
        *,
        on_complete: Callable[[FetchRecord], None] | None = None,
        max_connections_per_function: int = 100,
        keepalive_expiry_s: float = 30.0,
    ) -> None:
        try:
            self.ssl_context = ssl.create_default_context(cafile=certifi.where())
            if ca_file:
                self.ssl_context.load_verify_locations(cafile=ca_file)  # adds to the public roots
        except (OSError, ssl.SSLError) as e:
            raise OutboundSetupError(
                f"cannot load outbound_ca_file {ca_file!r}: {e}; point it at a readable PEM bundle of CA certificates"
            ) from None
        self.ssl_context.minimum_version = ssl.TLSVersion.TLSv1_2
        assert self.ssl_context.verify_mode == ssl.CERT_REQUIRED and self.ssl_context.check_hostname
        self.resolver: Resolver = resolver or system_resolver
        self.on_complete = on_complete
        self._max_connections = max_connections_per_function
        self._keepalive_expiry_s = keepalive_expiry_s
        self._pools: dict[tuple[str, tuple[HostRule, ...]], _Pool] = {}
        self._closing: set[asyncio.Task[None]] = set()
        self._last_sweep = time.monotonic()
        self._timeouts: dict[int, aiohttp.ClientTimeout] = {}

    # --- pools ---

    def _new_pool(self, rules: tuple[HostRule, ...]) -> _Pool:
        policy = AddressPolicy(rules)
        connector = aiohttp.TCPConnector(
            resolver=CheckedResolver(policy, self.resolver),
            use_dns_cache=False,  # every new connection resolves, and is checked, again
            ssl=self.ssl_context,
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_expiry_s,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            skip_auto_headers=_NO_AUTO_HEADERS,
            auto_decompress=False,
            trust_env=False,  # no proxies from the environment
            timeout=aiohttp.ClientTimeout(),  # the limits apply per request (_send, fetch)
            response_class=_Response,
            max_line_size=16384,
            max_field_size=16384,
        )
        return _Pool(session, policy)

    def _acquire(self, function: str, rules: tuple[HostRule, ...]) -> _Pool:
        key = (function, rules)
        entry = self._pools.get(key)
        if entry is None:
            entry = self._new_pool(rules)
            for other_key, other in list(self._pools.items()):
                if other_key[0] == function:  # the function's pools under older rules
                    del self._pools[other_key]
                    other.retired = True
                    self._close_if_idle(other)
            self._pools[key] = entry
        entry.users += 1
        entry.last_used = time.monotonic()
        self._sweep(entry.last_used)
        return entry

    def _release(self, entry: _Pool) -> None:
        entry.users -= 1
        entry.last_used = time.monotonic()
        self._close_if_idle(entry)

    def _sweep(self, now: float) -> None:
        """Close pools unused for longer than the keep-alive expiry (their sessions and connectors,
        not only the idle connections, which aiohttp expires itself)."""
        expiry = self._keepalive_expiry_s
        if now - self._last_sweep < expiry:
            return
        self._last_sweep = now
        for key, entry in list(self._pools.items()):
            if entry.users == 0 and now - entry.last_used > expiry:
                del self._pools[key]
                entry.retired = True
                self._close_if_idle(entry)

    def _close_if_idle(self, entry: _Pool) -> None:
        if entry.retired and entry.users == 0:
            task = asyncio.get_running_loop().create_task(entry.session.close())
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def forget(self, function: str) -> None:
        """Close a deleted function's pools (in-flight fetches finish first)."""
        for key in [k for k in self._pools if k[0] == function]:
            entry = self._pools.pop(key)
            entry.retired = True
            self._close_if_idle(entry)

    async def aclose(self) -> None:
        entries, self._pools = list(self._pools.values()), {}
        for entry in entries:
            await entry.session.close()
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    def _timeout(self, limits: FetchLimits) -> aiohttp.ClientTimeout:
        """aiohttp's `connect` bounds resolving, connecting and the TLS handshake (and a wait for a free
        connection of a full pool); the total is fetch's own asyncio.timeout over every hop."""
        ms = min(limits.connect_timeout_ms, limits.timeout_ms)
        timeout = self._timeouts.get(ms)
        if timeout is None:
            timeout = self._timeouts[ms] = aiohttp.ClientTimeout(connect=ms / 1000, ceil_threshold=float("inf"))
        return timeout

    # --- fetch ---

    async def fetch(
        self, function: str, rules: tuple[HostRule, ...], req: FetchRequest, limits: FetchLimits, budget: FetchBudget
    ) -> FetchResponse:
        """Raises FetchRefused (never a HiveError) for every refusal and network failure."""
        trace = _Trace(function, str(req.method)[:16], self.on_complete)
        try:
            budget.take_request(limits)
            with budget.slot(limits):
                method, headers, body = _prepare(req, limits)
                url = parse_url(req.url)
                entry = self._acquire(function, rules)
                try:
                    async with asyncio.timeout(limits.timeout_ms / 1000):
                        response = await self._follow(entry, rules, url, method, headers, body, limits, budget, trace)
                except TimeoutError:
                    raise FetchRefused(
                        "timeout",
                        (
                            f"the fetch of {trace.host} took longer than {limits.timeout_ms} ms in all; "
                            "raise the function's timeout_ms limit or use a faster upstream"
                        ),
                    ) from None
                finally:
                    self._release(entry)
        except FetchRefused as e:
            trace.end(None, e.code)
            e.records = tuple(trace.records)
            raise
        return FetchResponse(
            response.status,
            response.headers,
            response.body,
            response.url,
            (time.monotonic() - response.started) * 1000,
            tuple(trace.records),
        )

    async def _follow(
        self,
        pool: _Pool,
        rules: tuple[HostRule, ...],
        url: Url,
        method: str,
        headers: list[tuple[str, str]],
        body: bytes,
        limits: FetchLimits,
        budget: FetchBudget,
        trace: _Trace,
    ) -> _Final:
        started = time.monotonic()
        for hop in range(MAX_REDIRECTS + 1):
            rule = match(rules, url.scheme, url.host.name, url.port)
            trace.begin(method, url, rule)
            if rule is None:
                raise FetchRefused(
                    "host_not_allowed",
                    (
                        f"{url.scheme}://{url.authority} is not in the function's allowed_hosts"
                        + (" (reached by a redirect)" if hop else "")
                        + f'; to allow it, add "{url.scheme}://{url.authority}" to allowed_hosts'
                    ),
                )
            if url.host.ip is not None:  # aiohttp connects to a literal without asking the resolver
                check_literal(pool.policy, url.host.ip, url.port)
            if hop:
                budget.take_request(limits)
            response = await self._send(pool, url, method, headers, body, limits)
            budget.bytes_out += len(body)
            try:
                location = _header(response, b"location")
                if response.status not in REDIRECT_STATUSES or location is None:
                    data = await _read_body(response, url, limits)
                    budget.bytes_in += len(data)
                    trace.end(response.status, None, len(body), len(data), response.peer)
                    return _Final(response.status, _response_headers(response), data, str(url), started)
            finally:
                response.release()  # an unread body (a redirect's, a refused one's) drops the connection
            trace.end(response.status, None, len(body), 0, response.peer)
            if hop == MAX_REDIRECTS:
                raise FetchRefused(
                    "too_many_redirects",
                    (
                        f"{url} redirected once more (to {_decode(location)[:200]!r}) after {MAX_REDIRECTS} redirects; "
                        f"at most {MAX_REDIRECTS} are followed, fetch the final URL directly"
                    ),
                )
            next_url = resolve_location(url, _decode(location))
            if (response.status == 303 and method not in ("GET", "HEAD")) or (
                response.status in (301, 302) and method == "POST"
            ):
                method, body = "GET", b""  # as browsers do
                headers = [(n, v) for n, v in headers if n not in BODY_HEADERS]
            if next_url.origin != url.origin:
                headers = [(n, v) for n, v in headers if n not in CREDENTIAL_HEADERS]
            url = next_url
        raise AssertionError("unreachable: the last hop returns or raises")

    async def _send(
        self,
        pool: _Pool,
        url: Url,
        method: str,
        headers: list[tuple[str, str]],
        body: bytes,
        limits: FetchLimits,
    ) -> _Response:
        wire = [("host", url.authority), *headers]
        if not any(n == "user-agent" for n, _ in headers):
            wire.append(("user-agent", USER_AGENT))
        try:
            response = await pool.session.request(
                method,
                URL(str(url), encoded=True),  # already canonical and percent-encoded: sent as it is
                headers=wire,
                data=body if body or method in ("POST", "PUT", "PATCH") else None,
                allow_redirects=False,  # followed by _follow, each hop checked
                timeout=self._timeout(limits),
            )
        except _NETWORK_ERRORS as e:
            raise _refusal(e, url, limits) from None
        assert isinstance(response, _Response)
        return response


@dataclass(frozen=True)
class _Final:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    url: str
    started: float


def _header(response: aiohttp.ClientResponse, name: bytes) -> bytes | None:
    for n, v in response.raw_headers:
        if n.lower() == name:
            return v
    return None


def _response_headers(response: aiohttp.ClientResponse) -> list[tuple[str, str]]:
    return [
        (n.decode("latin-1").lower(), _decode(v))
        for n, v in response.raw_headers
        if n.decode("latin-1").lower() not in HOP_BY_HOP - {"content-length"}
    ]


async def _read_body(response: aiohttp.ClientResponse, url: Url, limits: FetchLimits) -> bytes:
    chunks: list[bytes] = []
    size = 0
    content = response.content
    try:
        while True:
            chunk = await content.readany()
            if not chunk:
                break
            size += len(chunk)
            if size > limits.max_response_bytes:
                raise FetchRefused(
                    "response_too_large",
                    (
                        f"the response from {url.scheme}://{url.authority} is over {limits.max_response_bytes} bytes "
                        "(reading stopped there); ask for less or raise the function's max_response_bytes limit"
                    ),
                )
            chunks.append(chunk)
    except _NETWORK_ERRORS as e:
        raise _refusal(e, url, limits) from None
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
