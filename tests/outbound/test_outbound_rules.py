"""allowed_hosts entries: the accepted forms, their canonical reading, and what a rule matches."""

from __future__ import annotations

import ipaddress

import pytest

from hive.errors import InvalidManifest
from hive.outbound import parse_allowed_hosts
from hive.outbound.rules import ACCEPTED_FORM


def one(entry: str):
    (rule,) = parse_allowed_hosts([entry])
    return rule


@pytest.mark.parametrize(
    "entry, scheme, host, port, wildcard",
    [
        ("https://api.example.com", "https", "api.example.com", 443, False),
        ("http://api.example.com", "http", "api.example.com", 80, False),
        ("https://API.Example.COM:8443/", "https", "api.example.com", 8443, False),
        ("HTTPS://*.example.com", "https", "example.com", 443, True),
        ("http://127.0.0.1:8080", "http", "127.0.0.1", 8080, False),
        ("https://[::1]:8443", "https", "::1", 8443, False),
        ("https://[0:0:0:0:0:0:0:1]", "https", "::1", 443, False),
        ("http://[::ffff:127.0.0.1]:81", "http", "127.0.0.1", 81, False),  # the IPv4 it denotes
        ("https://bücher.example", "https", "xn--bcher-kva.example", 443, False),
        ("https://*.ＥＸＡＭＰＬＥ.com", "https", "example.com", 443, True),
        ("https://example.com.", "https", "example.com", 443, False),
    ],
)
def test_accepted_entries_are_read_canonically(entry, scheme, host, port, wildcard) -> None:
    rule = one(entry)
    assert (rule.scheme, rule.host, rule.port, rule.wildcard, rule.entry) == (scheme, host, port, wildcard, entry)


def test_ip_entries_carry_the_address() -> None:
    assert one("http://10.1.2.3:9000").ip == ipaddress.ip_address("10.1.2.3")
    assert one("https://[fd00::5]").ip == ipaddress.ip_address("fd00::5")
    assert one("https://api.example.com").ip is None


@pytest.mark.parametrize(
    "entry, why",
    [
        ("api.example.com", "scheme://host"),
        ("ftp://api.example.com", "not http or https"),
        ("https://", "host is empty"),
        ("https://api.example.com/path", "no userinfo, path"),
        ("https://api.example.com?q=1", "no userinfo, path"),
        ("https://api.example.com#frag", "no userinfo, path"),
        ("https://user@api.example.com", "no userinfo"),
        ("https://user:pw@api.example.com", "no userinfo"),
        ("https://api.example.com:0", "out of range"),
        ("https://api.example.com:65536", "out of range"),
        ("https://api.example.com:", "scheme://host"),
        ("https://a.*.example.com", "whole first label"),
        ("https://*", "whole first label"),
        ("https://**.example.com", "whole first label"),
        ("https://*example.com", "whole first label"),
        ("https://*.127.0.0.1", "cannot precede an IP"),
        ("http://2130706433", "dotted-decimal"),
        ("http://0177.0.0.1", "dotted-decimal"),
        ("http://0x7f.1", "dotted-decimal"),
        ("http://1.2.3.4.5", "not an IPv4 address"),
        ("https://[::1", "scheme://host"),
        ("https://[fe80::1%25eth0]", "zone ids"),
        ("https://exa mple.com", "whitespace"),
        ("https://example.com\n", "whitespace"),
        ("https://ex\\ample.com", "scheme://host"),
        ("https://-bad-.example.com", "not a valid host name"),
        ("https://xn--zz.example.com", "invalid IDNA label"),
        ("https://" + "a" * 64 + ".example.com", "not a valid host name"),
    ],
)
def test_bad_entries_say_the_accepted_form(entry, why) -> None:
    with pytest.raises(InvalidManifest) as info:
        parse_allowed_hosts([entry])
    assert why in info.value.message
    assert ACCEPTED_FORM in info.value.message
    assert info.value.code == "invalid_manifest"


def test_allowed_hosts_must_be_a_list_of_strings() -> None:
    with pytest.raises(InvalidManifest, match="list of strings"):
        parse_allowed_hosts("https://api.example.com")  # type: ignore[arg-type]
    with pytest.raises(InvalidManifest, match="must be a string"):
        parse_allowed_hosts([42])  # type: ignore[list-item]


def test_duplicates_collapse_and_the_result_is_hashable() -> None:
    rules = parse_allowed_hosts(["https://a.example", "https://a.example", "http://127.0.0.1:1"])
    assert len(rules) == 2
    assert hash(rules) == hash(parse_allowed_hosts(["https://a.example", "http://127.0.0.1:1"]))


def test_exact_rule_matches_scheme_host_and_port() -> None:
    rule = one("https://api.example.com")
    assert rule.matches("https", "api.example.com", 443)
    assert not rule.matches("http", "api.example.com", 443)
    assert not rule.matches("https", "api.example.com", 8443)
    assert not rule.matches("https", "api.example.com.evil.com", 443)
    assert not rule.matches("https", "evilapi.example.com", 443)
    assert not rule.matches("https", "x.api.example.com", 443)


def test_wildcard_is_exactly_one_label() -> None:
    rule = one("https://*.example.com")
    assert rule.matches("https", "a.example.com", 443)
    assert rule.matches("https", "xn--bcher-kva.example.com", 443)
    assert not rule.matches("https", "example.com", 443)
    assert not rule.matches("https", "a.b.example.com", 443)
    assert not rule.matches("https", ".example.com", 443)
    assert not rule.matches("https", "a.example.com.evil.net", 443)
    assert not rule.matches("https", "aexample.com", 443)
    assert not rule.matches("http", "a.example.com", 80)
