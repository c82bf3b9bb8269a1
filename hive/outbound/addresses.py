"""Which addresses a fetch may connect to: public ones, and non-public ones granted by IP literal.

A name in allowed_hosts says nothing about where it resolves: "api.example.com" may resolve to
10.0.0.5 tomorrow, or "metadata.attacker.net" to 169.254.169.254. So the address actually
connected to is checked, after resolution (hive.outbound.network). An address is public when it
is globally routable unicast; loopback, RFC 1918 and unique-local, link-local (the cloud metadata
address 169.254.169.254 included), CGNAT, multicast, unspecified, documentation, benchmarking and
reserved ranges are not. IPv6 forms that carry an IPv4 address (IPv4-mapped, 6to4, Teredo,
NAT64's 64:ff9b::/96) are public only if the IPv4 inside is.

A non-public address is allowed only when an allowed_hosts entry names that IP literal with the
same port (e.g. "http://127.0.0.1:8080" grants 127.0.0.1 port 8080, whatever name led there).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from hive.outbound.hosts import IPAddress, canonical_ip
from hive.outbound.rules import HostRule

_V4, _V6 = ipaddress.IPv4Network, ipaddress.IPv6Network

# Listed explicitly, not only through ipaddress's is_global, whose tables changed between Python
# releases and which calls multicast "global".
NON_PUBLIC_V4 = tuple(
    _V4(n)
    for n in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    )
)
NON_PUBLIC_V6 = tuple(
    _V6(n)
    for n in (
        "::/8",  # unspecified, loopback, IPv4-compatible and other reserved forms
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "3fff::/20",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
NAT64 = _V6("64:ff9b::/96")


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]  # the client's address
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPAddress) -> bool:
    ip = canonical_ip(ip)
    if isinstance(ip, ipaddress.IPv4Address):
        return not any(ip in net for net in NON_PUBLIC_V4) and ip.is_global
    if ip.scope_id:
        return False
    inner = _embedded_ipv4(ip)
    if ip in NAT64:  # carved out of the reserved ::/8: it is exactly as public as the IPv4 it carries
        return inner is not None and is_public(inner)
    if inner is not None and not is_public(inner):
        return False
    return not any(ip in net for net in NON_PUBLIC_V6) and ip.is_global


class AddressPolicy:
    """Built once per (function, rules): the non-public (address, port) pairs its entries name."""

    def __init__(self, rules: Iterable[HostRule]) -> None:
        self.granted = frozenset((rule.ip, rule.port) for rule in rules if rule.ip is not None)
        self._seen: dict[tuple[IPAddress, int], bool] = {}  # answers so far: a pure function of (ip, port)

    def allows(self, ip: IPAddress, port: int) -> bool:
        key = (ip, port)
        answer = self._seen.get(key)
        if answer is None:
            canonical = canonical_ip(ip)
            answer = is_public(canonical) or (canonical, port) in self.granted
            if len(self._seen) >= 4096:
                self._seen.clear()
            self._seen[key] = answer
        return answer

    def why_not(self, ip: IPAddress, port: int) -> str:
        ip = canonical_ip(ip)
        literal = f"[{ip}]" if ip.version == 6 else str(ip)
        return (
            f"{ip} is not a public address (loopback, private, link-local, multicast or reserved); "
            f'to allow it, add the IP literal to allowed_hosts, e.g. "http://{literal}:{port}"'
        )
