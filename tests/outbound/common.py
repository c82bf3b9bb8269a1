"""Shared by the outbound tests: real upstream HTTP(S) servers on loopback, a test CA, a DNS seam.

The upstreams are real sockets served by threads in the test process; the client under test runs on
a uvloop event loop driven by asyncio.Runner (no pytest-asyncio). The resolver seam maps test names
to addresses; it replaces DNS only, never HTTP.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Coroutine, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import pytest
import uvloop
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from hive.outbound import (
    FetchBudget,
    FetchLimits,
    FetchRefused,
    FetchRequest,
    FetchResponse,
    HostRule,
    Outbound,
    parse_allowed_hosts,
)

T = TypeVar("T")
BOUND = 10.0  # seconds: the most any server-side wait lasts, so a broken test cannot hang


def run(coro: Coroutine[Any, Any, T]) -> T:
    """On uvloop, as in the gunicorn workers."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    for _ in range(int(BOUND / 0.01)):
        if predicate():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


# --- upstream servers ---


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def finish(self) -> None:
        super().finish()
        with self.server.upstream.lock:
            self.server.upstream.closed.add(self.client_address[:2])  # that connection ended

    def __getattr__(self, name: str) -> Any:
        if name.startswith("do_"):  # every method goes to one handler
            return self._handle
        raise AttributeError(name)

    def _send(self, status: int, body: bytes = b"", headers: Sequence[tuple[str, str]] = ()) -> None:
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        bodiless = status in (204, 304)  # never any content (RFC 9110), as real servers send them
        if not bodiless:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and not bodiless:
            self.wfile.write(body)

    def _handle(self) -> None:
        up = self.server.upstream
        parts = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = {
            "method": self.command,
            "path": self.path,
            "headers": [(k.lower(), v) for k, v in self.headers.items()],
            "body": body.decode("latin-1"),
            "peer": self.client_address[:2],
            "server": up.tag,
        }
        with up.lock:
            up.requests.append(seen)
            up.connections.add(self.client_address[:2])
        route = parts.path
        if route == "/echo":
            self._send(200, json.dumps(seen).encode(), [("Content-Type", "application/json"), ("X-Server", up.tag)])
        elif route.startswith("/status/"):
            self._send(int(route.rsplit("/", 1)[1]), f"status {route}".encode())
        elif route == "/redirect":
            self._send(int(q.get("code", "302")), b"moved", [("Location", q["to"])])
        elif route.startswith("/chain/"):
            n = int(route.rsplit("/", 1)[1])
            if n > 0:
                self._send(302, b"", [("Location", f"/chain/{n - 1}")])
            else:
                self._send(200, b"end of chain")
        elif route == "/large":
            self._large(int(q["n"]), chunked=q.get("chunked") == "1")
        elif route == "/slow":
            up.stop.wait(min(int(q["ms"]) / 1000, BOUND))
            self._send(200, b"slow")
        elif route == "/hold":
            with up.lock:
                up.holding += 1
            up.release.wait(BOUND)
            self._send(200, b"held")
        elif route == "/trickle":
            self._trickle()
        elif route == "/close-early":
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"0123456789")
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
        elif route == "/garbage":
            self.wfile.write(b"THIS IS NOT HTTP\r\n\r\n")
            self.wfile.flush()
            self.close_connection = True
        elif route == "/close":
            self._send(200, b"closing", [("Connection", "close")])
            self.close_connection = True
        else:
            self._send(404, b"no such route")

    def _large(self, n: int, *, chunked: bool) -> None:
        self.send_response(200)
        self.send_header("Transfer-Encoding" if chunked else "Content-Length", "chunked" if chunked else str(n))
        self.end_headers()
        piece = b"x" * 65536
        sent = 0
        try:
            while sent < n:
                chunk = piece[: n - sent]
                self.wfile.write(b"%x\r\n%s\r\n" % (len(chunk), chunk) if chunked else chunk)
                sent += len(chunk)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:  # the client stopped reading: that is what a limit does
            self.close_connection = True

    def _trickle(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.end_headers()
        try:
            for _ in range(1000):
                if self.server.upstream.stop.wait(0.05):
                    break
                self.wfile.write(b"x")
                self.wfile.flush()
        except OSError:
            pass
        self.close_connection = True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # many fetches connect at once in some tests
    upstream: Upstream

    def finish_request(self, request: Any, client_address: Any) -> None:
        ctx = self.upstream.tls
        if ctx is not None:
            try:
                request = ctx.wrap_socket(request, server_side=True)
            except (ssl.SSLError, OSError):
                with self.upstream.lock:
                    self.upstream.tls_failures += 1
                return
        super().finish_request(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


@dataclass
class Upstream:
    host: str = "127.0.0.1"
    port: int = 0
    tag: str = "A"
    tls: ssl.SSLContext | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    connections: set[tuple[str, int]] = field(default_factory=set)
    holding: int = 0
    tls_failures: int = 0
    closed: set[tuple[str, int]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def start(self) -> Upstream:
        cls = _Server6 if ":" in self.host else _Server
        self._server = cls((self.host, self.port), _Handler)
        self._server.upstream = self
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self.stop.set()
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(BOUND)

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self.tls else 'http'}://{host}:{self.port}"

    def url(self, path: str) -> str:
        return self.origin + path


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream(tag="A").start()
    yield server
    server.close()


@pytest.fixture
def other() -> Iterator[Upstream]:
    """A second loopback upstream on another port: a host a function is not granted."""
    server = Upstream(tag="B").start()
    yield server
    server.close()


class SilentListener:
    """Accepts TCP connections and never says a word: a TLS handshake with it cannot complete."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()


def closed_port() -> int:
    """A loopback port with nothing listening (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- DNS seam ---


class Dns:
    """Maps test names to addresses; a list per name is returned on each lookup in turn (the last repeats)."""

    def __init__(self, table: dict[str, list[list[str]] | list[str]], delay_s: float = 0.0) -> None:
        self.table = table
        self.delay_s = delay_s
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if host not in self.table:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        answers = self.table[host]
        if answers and isinstance(answers[0], list):
            turn = sum(1 for h in self.calls if h == host) - 1
            return list(answers[min(turn, len(answers) - 1)])
        return list(answers)  # type: ignore[arg-type]


# --- fetching ---


def rules(*entries: str) -> tuple[HostRule, ...]:
    return parse_allowed_hosts(list(entries))


async def afetch(
    ob: Outbound,
    allowed: tuple[HostRule, ...],
    url: str,
    *,
    function: str = "f",
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    limits: FetchLimits | None = None,
    budget: FetchBudget | None = None,
) -> FetchResponse:
    return await ob.fetch(
        function,
        allowed,
        FetchRequest(method, url, list(headers), body),
        limits or FetchLimits(),
        budget or FetchBudget(),
    )


def fetch(
    allowed: tuple[HostRule, ...], url: str, *, resolver: Any = None, ca_file: str | None = None, **kw: Any
) -> FetchResponse:
    """One fetch on a fresh Outbound, closed afterwards."""

    async def go() -> FetchResponse:
        ob = Outbound(ca_file=ca_file, resolver=resolver)
        try:
            return await afetch(ob, allowed, url, **kw)
        finally:
            await ob.aclose()

    return run(go())


def refused(allowed: tuple[HostRule, ...], url: str, **kw: Any) -> FetchRefused:
    with pytest.raises(FetchRefused) as info:
        fetch(allowed, url, **kw)
    return info.value


def echoed(response: FetchResponse) -> dict[str, Any]:
    assert response.status == 200, (response.status, response.body[:200])
    seen = json.loads(response.body)
    seen["headers"] = [tuple(h) for h in seen["headers"]]
    return seen


# --- a test CA and server certificates, made with `cryptography` at test time ---


@dataclass
class Pki:
    ca_file: Path
    ca_cert: x509.Certificate
    ca_key: ec.EllipticCurvePrivateKey
    folder: Path

    def server_context(
        self,
        *,
        names: Sequence[str] = ("api.example.test", "localhost"),
        ips: Sequence[str] = ("127.0.0.1",),
        expired: bool = False,
        sni_seen: list[str] | None = None,
    ) -> ssl.SSLContext:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start, end = (
            (now - dt.timedelta(days=10), now - dt.timedelta(days=1))
            if expired
            else (now - dt.timedelta(hours=1), now + dt.timedelta(days=1))
        )
        sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "server")]))
            .issuer_name(self.ca_cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.SubjectAlternativeName(sans), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_encipherment=False,
                    content_commitment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=False,
                    crl_sign=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.ca_key.public_key()), critical=False)
            .sign(self.ca_key, hashes.SHA256())
        )
        stem = self.folder / f"server-{cert.serial_number}"
        cert_path, key_path = stem.with_suffix(".crt"), stem.with_suffix(".key")
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_path.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_path, key_path)
        if sni_seen is not None:

            def remember(sock: Any, name: str | None, _ctx: Any) -> None:
                sni_seen.append(name or "")

            ctx.sni_callback = remember
        return ctx


def make_pki(folder: Path) -> Pki:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Edge Hive Test CA")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_encipherment=False,
                content_commitment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    ca_file = folder / "ca.pem"
    ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return Pki(ca_file, cert, key, folder)
