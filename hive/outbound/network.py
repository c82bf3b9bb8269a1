"""The httpcore network backend that closes the DNS-rebinding gap.

httpcore asks its backend to connect_tcp(host, port). We resolve the host ourselves, check every
address it resolves to against the function's AddressPolicy, and connect to a checked address
(an IP literal, so nothing resolves again). If any address is refused, the whole host is refused:
a name that mixes public and private answers is an attack, not a configuration. TLS is started
afterwards by httpcore on the stream we return, with the URL's host *name* as the SNI and
hostname to verify, so certificates are still checked against the name, not the IP.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

import httpcore
from httpcore import AnyIOBackend, AsyncNetworkBackend, AsyncNetworkStream

from hive.outbound.addresses import AddressPolicy
from hive.outbound.errors import FetchRefused
from hive.outbound.hosts import IPAddress

# (host name, port) -> its addresses, as text or ipaddress objects. The injectable DNS seam.
Resolver = Callable[[str, int], Awaitable[Sequence[str | IPAddress]]]


async def system_resolver(host: str, port: int) -> list[str]:
    """The libc resolver, off the loop thread (uvloop and asyncio both run getaddrinfo in a pool)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    seen: dict[str, None] = {}
    for *_, sockaddr in infos:
        seen.setdefault(str(sockaddr[0]), None)
    return list(seen)


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


class GuardedBackend(AsyncNetworkBackend):
    def __init__(self, policy: AddressPolicy, resolver: Resolver) -> None:
        self.policy = policy
        self.resolver = resolver
        self.inner = AnyIOBackend()  # the worker's loop is asyncio (uvloop)

    async def _addresses(self, host: str, port: int) -> list[IPAddress]:
        literal = _literal(host)
        if literal is not None:
            return [literal]
        try:
            answers = await self.resolver(host, port)
        except OSError as e:
            raise FetchRefused("dns_failed", f"{host} did not resolve: {e.strerror or e}") from None
        addresses = [_literal(str(a)) for a in answers]
        if not addresses or None in addresses:
            raise FetchRefused("dns_failed", f"{host} did not resolve to IP addresses (got {list(answers)[:4]})")
        return [a for a in addresses if a is not None]

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        try:
            async with asyncio.timeout_at(deadline):
                addresses = await self._addresses(host, port)
        except TimeoutError:
            raise FetchRefused("connect_timeout", f"resolving {host} took longer than the connect timeout") from None
        for address in addresses:
            if not self.policy.allows(address, port):
                where = "" if _literal(host) is not None else f"{host} resolves to {address}: "
                raise FetchRefused("address_not_allowed", where + self.policy.why_not(address, port))
        # Connect to the checked addresses in order, within what is left of the connect timeout.
        last: Exception | None = None
        for address in addresses:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            try:
                return await self.inner.connect_tcp(
                    str(address), port, timeout=remaining, local_address=local_address, socket_options=socket_options
                )
            except httpcore.ConnectTimeout:
                raise
            except httpcore.ConnectError as e:
                last = e
        assert last is not None
        raise last

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> AsyncNetworkStream:
        raise FetchRefused("connect_failed", "unix sockets are never reachable from functions")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)
