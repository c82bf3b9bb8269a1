"""One way to read a host, shared by allowed_hosts entries and fetched URLs, so both compare equal.

The SSRF checks are only as good as the agreement between what we match and what we connect to.
So every host goes through normalize_host: IDNA/Unicode names are mapped (UTS #46) and encoded to
lowercase A-labels; any host whose last label is a number is read as an IPv4 address the way
browsers read it (decimal, octal, hex, 1 to 4 parts: "2130706433", "0177.0.0.1", "0x7f.1" are
all 127.0.0.1); IPv6 literals are parsed, and IPv4-mapped ones become the IPv4 they denote. What
comes out is either a canonical IP or a plain LDH name; anything else is refused.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import idna

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_LABEL_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_NUMBER_RE = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")


@dataclass(frozen=True)
class Host:
    name: str  # canonical text: a lowercase A-label name, dotted IPv4, or compressed IPv6 (no brackets)
    ip: IPAddress | None


def _ipv4_number(part: str) -> int:
    if part[:2] in ("0x", "0X"):
        return int(part[2:] or "0", 16)
    if len(part) > 1 and part[0] == "0":
        return int(part[1:], 8)  # raises on 8 or 9, as browsers refuse them
    return int(part)


def _parse_ipv4(text: str) -> ipaddress.IPv4Address:
    """The WHATWG URL IPv4 parser: "a.b.c.d", "a.b.c" (c is 16 bits), "a.b" (24 bits), "a" (32 bits)."""
    parts = text.split(".")
    if len(parts) > 4 or not all(_NUMBER_RE.fullmatch(p) for p in parts):
        raise ValueError(f"{text!r} ends in a number but is not an IPv4 address")
    try:
        numbers = [_ipv4_number(p) for p in parts]
    except ValueError:
        raise ValueError(f"{text!r} is not a valid IPv4 address (bad octal digit)") from None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise ValueError(f"{text!r} is not a valid IPv4 address (a part is out of range)")
    value = last
    for i, n in enumerate(head):
        value += n << (8 * (3 - i))
    return ipaddress.IPv4Address(value)


def canonical_ip(ip: IPAddress) -> IPAddress:
    """::ffff:a.b.c.d reaches a.b.c.d on a dual-stack socket: treat it as that IPv4 everywhere."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _ip_host(ip: IPAddress) -> Host:
    ip = canonical_ip(ip)
    return Host(ip.compressed, ip)


def normalize_host(raw: str) -> Host:
    """Raise ValueError saying what is wrong; never return something that is not a plain host."""
    if not raw:
        raise ValueError("the host is empty")
    if any(c <= " " or c == "\x7f" for c in raw):
        raise ValueError(f"{raw!r} contains whitespace or a control character")
    if raw.startswith("[") or raw.endswith("]"):
        if not (raw.startswith("[") and raw.endswith("]")) or "%" in raw:
            raise ValueError(f"{raw!r} is not an IPv6 literal like [2001:db8::1] (zone ids are not accepted)")
        try:
            return _ip_host(ipaddress.IPv6Address(raw[1:-1]))
        except ValueError:
            raise ValueError(f"{raw!r} is not a valid IPv6 address") from None
    text = raw
    if not text.isascii():
        # UTS #46 mapping, as browsers do: fullwidth letters and digits, ideographic full stops
        # and the like become their ASCII forms *before* we decide whether this is an IP.
        try:
            text = idna.uts46_remap(text, std3_rules=True, transitional=False)
        except idna.IDNAError as e:
            raise ValueError(f"{raw!r} is not a valid host name: {e}") from None
    text = text.lower()
    if text.endswith("."):
        text = text[:-1]  # the root label: "example.com." is example.com
    labels = text.split(".")
    if labels and _NUMBER_RE.fullmatch(labels[-1]):
        return _ip_host(_parse_ipv4(text))
    if not text.isascii():
        try:
            text = idna.encode(text, uts46=False).decode("ascii")
        except idna.IDNAError as e:
            raise ValueError(f"{raw!r} is not a valid host name: {e}") from None
        labels = text.split(".")
    if len(text) > 253 or not all(_LABEL_RE.fullmatch(label) for label in labels):
        raise ValueError(f"{raw!r} is not a valid host name (letters, digits, '-' and '.', labels of 1-63)")
    for label in labels:
        if label.startswith("xn--"):
            try:
                idna.decode(label)  # a malformed A-label must not pass as a name
            except idna.IDNAError:
                raise ValueError(f"{raw!r} has an invalid IDNA label {label!r}") from None
    return Host(text, None)


def bracketed(host: Host) -> str:
    """The host as it appears in a URL or a Host header."""
    return f"[{host.name}]" if isinstance(host.ip, ipaddress.IPv6Address) else host.name
