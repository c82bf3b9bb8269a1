"""allowed_hosts: which scheme://host[:port] a function may fetch. Default deny.

Accepted entries: "https://api.example.com", "https://*.example.com" (`*` is exactly one DNS
label: it matches a.example.com, not example.com nor a.b.example.com), "http://127.0.0.1:8080",
"https://[::1]:8443". The port defaults to the scheme's. No path, query, fragment or userinfo.
Naming an IP literal is also how a function is granted a loopback or private address: see
hive.outbound.addresses.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hive.errors import InvalidManifest
from hive.outbound.hosts import IPAddress, canonical_ip, normalize_host

DEFAULT_PORTS = {"http": 80, "https": 443}
ACCEPTED_FORM = (
    'use "http://HOST" or "https://HOST" with an optional ":PORT", where HOST is a name, '
    '"*.name" (one label), an IPv4 address or a bracketed IPv6 address, e.g. '
    '"https://api.example.com", "https://*.example.com", "http://127.0.0.1:8080"'
)

_ENTRY_RE = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<host>\[[^\]]*\]|[^:/?#@\[\]\\]*)(?::(?P<port>[0-9]{1,5}))?/?$"
)
_DOTTED_QUAD_RE = re.compile(
    r"^(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(\.(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])){3}$"
)


@dataclass(frozen=True)
class HostRule:
    entry: str  # as written in the manifest, for messages and metrics labels
    scheme: str
    host: str  # canonical (hosts.normalize_host); for a wildcard, the suffix after "*."
    port: int
    wildcard: bool = False
    ip: IPAddress | None = None

    def matches(self, scheme: str, host: str, port: int) -> bool:
        """scheme, host and port as parsed by hive.outbound.urls (canonical host text)."""
        if scheme != self.scheme or port != self.port:
            return False
        if not self.wildcard:
            return host == self.host
        label, dot, rest = host.partition(".")
        return bool(dot) and bool(label) and rest == self.host and "." not in label and label != "*"


def parse_port(text: str | None, scheme: str) -> int:
    if text is None:
        return DEFAULT_PORTS[scheme]
    port = int(text)
    if not 1 <= port <= 65535:
        raise ValueError(f"port {port} is out of range 1-65535")
    return port


def parse_rule(entry: str) -> HostRule:
    def bad(why: str) -> InvalidManifest:
        return InvalidManifest(f"allowed_hosts entry {entry!r}: {why}; {ACCEPTED_FORM}")

    if not isinstance(entry, str):
        raise bad("must be a string")
    m = _ENTRY_RE.fullmatch(entry)
    if m is None:
        raise bad("not of the form scheme://host[:port] (no userinfo, path, query or fragment)")
    scheme = m["scheme"].lower()
    if scheme not in DEFAULT_PORTS:
        raise bad(f"scheme {scheme!r} is not http or https")
    try:
        port = parse_port(m["port"], scheme)
    except ValueError as e:
        raise bad(str(e)) from None
    raw = m["host"]
    wildcard = raw.startswith("*.")
    if "*" in (raw[2:] if wildcard else raw):
        raise bad("'*' may only be the whole first label, as in *.example.com")
    try:
        host = normalize_host(raw[2:] if wildcard else raw)
    except ValueError as e:
        raise bad(str(e)) from None
    if host.ip is not None:
        if wildcard:
            raise bad("'*.' cannot precede an IP address")
        # Grants of addresses are security decisions: spell them plainly, not as 0x7f.1 or 2130706433.
        if host.ip.version == 4 and not raw.startswith("[") and not _DOTTED_QUAD_RE.fullmatch(raw):
            raise bad(f"write the IPv4 address in dotted-decimal form ({host.name})")
        return HostRule(entry, scheme, host.name, port, ip=canonical_ip(host.ip))
    return HostRule(entry, scheme, host.name, port, wildcard=wildcard)


def parse_allowed_hosts(entries: list[str]) -> tuple[HostRule, ...]:
    """Validate at deploy; the tuple is hashable, so it also keys the connection pools."""
    if not isinstance(entries, list | tuple):
        raise InvalidManifest(f"allowed_hosts must be a list of strings; {ACCEPTED_FORM}")
    rules: list[HostRule] = []
    for entry in entries:
        rule = parse_rule(entry)
        if rule not in rules:
            rules.append(rule)
    return tuple(rules)


def match(rules: tuple[HostRule, ...], scheme: str, host: str, port: int) -> HostRule | None:
    for rule in rules:
        if rule.matches(scheme, host, port):
            return rule
    return None
