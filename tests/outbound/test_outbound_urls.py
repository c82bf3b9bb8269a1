"""The strict URL reader and the address policy, on their own (the real fetches are in test_outbound_ssrf)."""

from __future__ import annotations

import ipaddress

import pytest

from hive.outbound import FetchRefused, is_public, parse_url
from hive.outbound.addresses import AddressPolicy
from hive.outbound.rules import parse_allowed_hosts
from hive.outbound.urls import resolve_location


@pytest.mark.parametrize(
    "url, host, port, target",
    [
        ("http://2130706433/", "127.0.0.1", 80, "/"),  # decimal
        ("http://0177.0.0.1/", "127.0.0.1", 80, "/"),  # octal
        ("http://0x7f.1/", "127.0.0.1", 80, "/"),  # hex, two parts
        ("http://0x7F000001:8080/x", "127.0.0.1", 8080, "/x"),
        ("http://127.1/", "127.0.0.1", 80, "/"),
        ("http://0/", "0.0.0.0", 80, "/"),
        ("http://169.254.169.254./latest", "169.254.169.254", 80, "/latest"),  # trailing root dot
        ("http://０ｘ７ｆ.１/", "127.0.0.1", 80, "/"),  # fullwidth digits become an IP, not a name
        ("http://127。0。0。1/", "127.0.0.1", 80, "/"),  # ideographic full stops
        ("http://[::1]:8443/a", "::1", 8443, "/a"),
        ("http://[0:0:0:0:0:0:0:1]/", "::1", 80, "/"),
        ("http://[::ffff:127.0.0.1]/", "127.0.0.1", 80, "/"),  # IPv4-mapped: the IPv4 it denotes
        ("http://[::ffff:7f00:1]/", "127.0.0.1", 80, "/"),
        ("https://evil.com#@allowed.com", "evil.com", 443, "/"),  # the authority ends at '#'
        ("https://evil.com?@allowed.com", "evil.com", 443, "/?@allowed.com"),
        ("https://evil.com/@allowed.com", "evil.com", 443, "/@allowed.com"),
        ("HTTPS://API.Example.COM", "api.example.com", 443, "/"),
        ("https://Bücher.example/ü?q=ä", "xn--bcher-kva.example", 443, "/%C3%BC?q=%C3%A4"),
        ("https://xn--bcher-kva.example/", "xn--bcher-kva.example", 443, "/"),
        ("https://ⓐpi.example.com/", "api.example.com", 443, "/"),  # UTS #46 mapping before matching
        ("https://api.example.com/a%2Fb?x=%41", "api.example.com", 443, "/a%2Fb?x=%41"),
        ("http://h?q=1", "h", 80, "/?q=1"),
    ],
)
def test_urls_read_as_the_host_they_denote(url, host, port, target) -> None:
    u = parse_url(url)
    assert (u.host.name, u.port, u.target) == (host, port, target)


@pytest.mark.parametrize(
    "url, why",
    [
        ("https://allowed.com@evil.com/", "credentials"),
        ("https://allowed.com:443@evil.com/", "credentials"),
        ("https://user:pw@allowed.com/", "credentials"),
        ("https://allowed.com\\@evil.com/", "backslash"),
        ("https:\\\\evil.com/", "backslash"),
        ("https://evil.com\\.allowed.com/", "backslash"),
        ("https://allowed.com\t.evil.com/", "whitespace"),
        ("https://allowed.com\n/", "whitespace"),
        ("https://allowed.com /", "whitespace"),
        ("https://%61llowed.com/", "'%'"),
        ("https://*.allowed.com/", "'*'"),
        ("ftp://allowed.com/", "not http or https"),
        ("file:///etc/passwd", "not http or https"),
        ("//allowed.com/", "absolute URL"),
        ("https:allowed.com", "absolute URL"),
        ("allowed.com/x", "absolute URL"),
        ("https:///x", "empty"),
        ("http://h:/", "port"),
        ("http://h:0/", "out of range"),
        ("http://h:65536/", "out of range"),
        ("http://h:80:80/", "port"),
        ("http://h:+80/", "port"),
        ("http://[::1/", "unterminated"),
        ("http://[::1]x/", "port"),
        ("http://[fe80::1%25lo]/", "'%'"),
        ("http://[not-ip]/", "not a valid IPv6"),
        ("http://1.2.3.4.5/", "not an IPv4 address"),
        ("http://256.1.1.1/", "out of range"),
        ("http://08.0.0.1/", "bad octal"),
        ("http://example.0x1/", "not an IPv4 address"),
        ("http://-evil.com/", "not a valid host name"),
        ("http://ex_am ple.com/", "whitespace"),
        ("http://a..b/", "not a valid host name"),
        ("http://a\u2024b/", "not a valid host name"),  # one dot leader is not a dot
    ],
)
def test_ambiguous_urls_are_refused(url, why) -> None:
    with pytest.raises(FetchRefused) as info:
        parse_url(url)
    assert info.value.code == "bad_url"
    assert why in info.value.message


def test_redirect_locations_are_read_by_the_same_reader() -> None:
    base = parse_url("https://api.example.com/a/b?q")
    assert str(resolve_location(base, "c")) == "https://api.example.com/a/c"
    assert str(resolve_location(base, "/d")) == "https://api.example.com/d"
    assert str(resolve_location(base, "//other.example/x")) == "https://other.example/x"
    assert str(resolve_location(base, "http://0x7f.1:81/")) == "http://127.0.0.1:81/"
    for bad in ("https://api.example.com@evil.com/", "/\\evil.com", "https://evil.com\t/"):
        with pytest.raises(FetchRefused) as info:
            resolve_location(base, bad)
        assert info.value.code == "bad_url"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.9",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "169.254.0.1",
        "100.64.0.1",
        "100.127.255.255",
        "0.0.0.0",
        "0.1.2.3",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "240.0.0.1",
        "192.0.2.1",
        "198.51.100.7",
        "203.0.113.9",
        "198.18.0.1",
        "192.0.0.8",
        "::",
        "::1",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "fec0::1",
        "2001:db8::1",
        "100::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:10.0.0.1",
        "::127.0.0.1",
        "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe",
        "64:ff9b:1::1",  # NAT64 of loopback / metadata; local-use NAT64
        "2002:7f00:1::1",
        "2002:a9fe:a9fe::1",  # 6to4 of loopback / metadata
        "2001:0:4136:e378:8000:63bf:80ff:fffe",  # Teredo
    ],
)
def test_non_public_addresses(address) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "1.1.1.1",
        "8.8.8.8",
        "93.184.216.34",
        "100.63.255.255",
        "100.128.0.0",
        "172.32.0.1",
        "169.255.0.1",
        "2606:4700:4700::1111",
        "2a00:1450:4001::200e",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
        "2002:808:808::1",
    ],
)
def test_public_addresses(address) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_policy_grants_only_the_named_ip_and_port() -> None:
    policy = AddressPolicy(parse_allowed_hosts(["http://127.0.0.1:8080", "https://[::1]:8443", "https://a.example"]))
    ip = ipaddress.ip_address
    assert policy.allows(ip("127.0.0.1"), 8080)
    assert policy.allows(ip("::ffff:127.0.0.1"), 8080)  # the same address
    assert not policy.allows(ip("127.0.0.1"), 8081)
    assert not policy.allows(ip("127.0.0.2"), 8080)
    assert policy.allows(ip("::1"), 8443)
    assert not policy.allows(ip("::1"), 8080)
    assert not policy.allows(ip("169.254.169.254"), 80)
    assert policy.allows(ip("1.1.1.1"), 443)
    assert "http://169.254.169.254:80" in policy.why_not(ip("169.254.169.254"), 80)
