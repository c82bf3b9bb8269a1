"""The resolver that closes the DNS-rebinding gap, for aiohttp's connector.

aiohttp's TCPConnector asks its resolver for a host's addresses each time it opens a connection
(the DNS cache is off) and connects only to what the resolver returned. CheckedResolver resolves
the name itself, checks every address against the function's AddressPolicy, and returns them as
IP literals: what is connected to is what was checked. If any address is refused, the whole host is
refused: a name that mixes public and private answers is an attack, not a configuration. TLS is
started by aiohttp with the URL's host *name* as the SNI and hostname to verify, so certificates
are still checked against the name, not the IP.

aiohttp never asks a resolver about an IP literal: it connects to the literal as written. So a
URL whose host is an IP is checked by `check_literal` before its request is made (hive.outbound.client).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Sequence

from aiohttp.abc import AbstractResolver, ResolveResult

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


def check_literal(policy: AddressPolicy, ip: IPAddress, port: int) -> None:
    if not policy.allows(ip, port):
        raise FetchRefused("address_not_allowed", policy.why_not(ip, port))


class CheckedResolver(AbstractResolver):
    """One per connection pool (function and rules): resolves through the seam, refuses what the
    policy refuses. Its FetchRefused passes through aiohttp unchanged (it is not an OSError)."""

    def __init__(self, policy: AddressPolicy, resolver: Resolver) -> None:
        self.policy = policy
        self.resolver = resolver

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

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[ResolveResult]:
        addresses = await self._addresses(host, port)
        for address in addresses:
            if not self.policy.allows(address, port):
                where = "" if _literal(host) is not None else f"{host} resolves to {address}: "
                raise FetchRefused("address_not_allowed", where + self.policy.why_not(address, port))
        return [
            {
                "hostname": host,
                "host": str(address),
                "port": port,
                "family": socket.AF_INET6 if address.version == 6 else socket.AF_INET,
                "proto": socket.IPPROTO_TCP,
                "flags": socket.AI_NUMERICHOST,
            }
            for address in addresses
        ]

    async def close(self) -> None:
        pass
