"""SSRF: real fetches to loopback upstreams, refused unless the IP literal is granted.

Names are resolved through the Dns seam (tests.outbound.common); everything else is real sockets.
A refused fetch must never reach the upstream: each refusal also checks the upstream saw nothing.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from tests.outbound.common import Dns, Upstream, echoed, fetch, refused, rules


def test_granted_ip_literal_reaches_the_upstream(upstream: Upstream) -> None:
    response = fetch(rules(upstream.origin), upstream.url("/echo"))
    assert echoed(response)["server"] == "A"
    assert response.records[0].address == "127.0.0.1"
    assert response.records[0].rule == upstream.origin


def test_loopback_not_granted_is_refused(upstream: Upstream) -> None:
    e = refused(rules("https://api.example.com"), upstream.url("/echo"))
    assert e.code == "host_not_allowed"
    assert f"http://127.0.0.1:{upstream.port}" in e.message
    assert upstream.requests == []


def test_granting_another_port_does_not_grant_this_one(upstream: Upstream) -> None:
    e = refused(rules(f"http://127.0.0.1:{upstream.port + 1}"), upstream.url("/echo"))
    assert e.code == "host_not_allowed"
    assert upstream.requests == []


@pytest.mark.parametrize(
    "form",
    ["2130706433", "0177.0.0.1", "0x7f.1", "0x7f000001", "127.1", "[::ffff:127.0.0.1]", "０ｘ７ｆ.１", "127.0.0.1."],
)
def test_other_spellings_of_loopback_are_recognised(upstream: Upstream, form: str) -> None:
    url = f"http://{form}:{upstream.port}/echo"
    # Not granted: refused as the IP it denotes.
    e = refused(rules("https://api.example.com"), url)
    assert e.code == "host_not_allowed" and f"127.0.0.1:{upstream.port}" in e.message
    assert upstream.requests == []
    # Granted as that literal: it is the same address, so it is reached.
    assert echoed(fetch(rules(upstream.origin), url))["server"] == "A"


def test_userinfo_tricks_never_reach_the_upstream(upstream: Upstream) -> None:
    granted = rules(upstream.origin)
    assert refused(granted, f"http://127.0.0.1:{upstream.port}@evil.test/echo").code == "bad_url"
    assert refused(granted, f"http://evil.test@127.0.0.1:{upstream.port}/echo").code == "bad_url"
    e = refused(granted, f"http://evil.test#@127.0.0.1:{upstream.port}/echo", resolver=Dns({}))
    assert e.code == "host_not_allowed" and "evil.test" in e.message
    assert refused(granted, f"http://127.0.0.1:{upstream.port}\\@evil.test/echo").code == "bad_url"
    assert upstream.requests == []


def test_name_resolving_to_loopback_is_refused_unless_the_ip_is_granted(upstream: Upstream) -> None:
    dns = Dns({"api.example.test": ["127.0.0.1"]})
    url = f"http://api.example.test:{upstream.port}/echo"
    e = refused(rules(f"http://api.example.test:{upstream.port}"), url, resolver=dns)
    assert e.code == "address_not_allowed"
    assert "resolves to 127.0.0.1" in e.message and f'"http://127.0.0.1:{upstream.port}"' in e.message
    assert upstream.requests == []
    seen = echoed(fetch(rules(f"http://api.example.test:{upstream.port}", upstream.origin), url, resolver=dns))
    # The Host header names the host the guest asked for; the socket went to the checked address.
    assert ("host", f"api.example.test:{upstream.port}") in seen["headers"]


def test_name_resolving_to_cloud_metadata_is_refused() -> None:
    dns = Dns(
        {
            "metadata.attacker.test": ["169.254.169.254"],
            "v6.attacker.test": ["fe80::1"],
            "mapped.attacker.test": ["::ffff:169.254.169.254"],
            "nat64.attacker.test": ["64:ff9b::a9fe:a9fe"],
        }
    )
    for name in dns.table:
        e = refused(rules(f"http://{name}"), f"http://{name}/latest/meta-data/", resolver=dns)
        assert e.code == "address_not_allowed", name
    # And the literal itself, reached through a granted name's redirect or directly, is a host rule miss.
    assert (
        refused(rules("http://metadata.attacker.test"), "http://169.254.169.254/", resolver=dns).code
        == "host_not_allowed"
    )


@pytest.mark.parametrize(
    "answer", ["10.0.0.5", "192.168.1.1", "172.16.0.1", "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fd00::1", "::"]
)
def test_name_resolving_to_private_ranges_is_refused(answer: str) -> None:
    dns = Dns({"svc.test": [answer]})
    assert refused(rules("http://svc.test:9"), "http://svc.test:9/", resolver=dns).code == "address_not_allowed"


def test_any_refused_answer_refuses_the_host(upstream: Upstream) -> None:
    """A name that mixes a granted address with a forbidden one is an attack, not a configuration."""
    dns = Dns({"mixed.test": ["127.0.0.1", "10.0.0.1"]})
    e = refused(
        rules(f"http://mixed.test:{upstream.port}", upstream.origin),
        f"http://mixed.test:{upstream.port}/echo",
        resolver=dns,
    )
    assert e.code == "address_not_allowed" and "10.0.0.1" in e.message
    assert upstream.requests == []


@pytest.fixture
def upstream_b(upstream: Upstream) -> Iterator[Upstream]:
    """Server B on 127.0.0.2, same port as A on 127.0.0.1: which one answers shows where we connected."""
    try:
        server = Upstream(host="127.0.0.2", port=upstream.port, tag="B").start()
    except OSError as e:
        pytest.skip(f"cannot bind 127.0.0.2:{upstream.port}: {e}")
    yield server
    server.close()


def test_the_connection_goes_to_the_checked_address(upstream: Upstream, upstream_b: Upstream) -> None:
    port = upstream.port
    to_b = Dns({"svc.test": ["127.0.0.2"]})
    granted_b = rules(f"http://svc.test:{port}", f"http://127.0.0.2:{port}")
    response = fetch(granted_b, f"http://svc.test:{port}/echo", resolver=to_b)
    assert echoed(response)["server"] == "B" and response.records[0].address == "127.0.0.2"
    assert upstream.requests == []
    # The system resolver cannot resolve svc.test at all: reaching B proves nothing resolved it again.
    with pytest.raises(socket.gaierror):
        socket.getaddrinfo("svc.test", port)


def test_dns_rebinding_between_connections_is_caught(upstream: Upstream, upstream_b: Upstream) -> None:
    """First lookup: the granted 127.0.0.1. Second lookup (a new connection): 127.0.0.2, not granted."""
    import asyncio

    from hive.outbound import Outbound
    from tests.outbound.common import afetch, run

    port = upstream.port
    dns = Dns({"rebind.test": [["127.0.0.1"], ["127.0.0.2"]]})
    granted = rules(f"http://rebind.test:{port}", f"http://127.0.0.1:{port}")

    async def go() -> tuple[str, str]:
        ob = Outbound(resolver=dns)
        try:
            first = await afetch(ob, granted, f"http://rebind.test:{port}/close")  # the server closes it
            await asyncio.sleep(0)
            try:
                await afetch(ob, granted, f"http://rebind.test:{port}/echo")
            except Exception as e:  # noqa: BLE001 - the refusal is the point
                return first.body.decode(), getattr(e, "code", repr(e))
            return first.body.decode(), "fetched"
        finally:
            await ob.aclose()

    assert run(go()) == ("closing", "address_not_allowed")
    assert dns.calls == ["rebind.test", "rebind.test"]
    assert [r["server"] for r in upstream.requests] == ["A"] and upstream_b.requests == []


def test_ipv6_loopback_literal() -> None:
    try:
        server = Upstream(host="::1", tag="six").start()
    except OSError as e:
        pytest.skip(f"no IPv6 loopback: {e}")
    try:
        assert refused(rules("https://api.example.com"), server.url("/echo")).code == "host_not_allowed"
        assert echoed(fetch(rules(server.origin), server.url("/echo")))["server"] == "six"
        assert echoed(fetch(rules(server.origin), f"http://[0:0:0:0:0:0:0:1]:{server.port}/echo"))["server"] == "six"
        dns = Dns({"six.test": ["::1"]})
        name = f"http://six.test:{server.port}"
        assert refused(rules(name), name + "/echo", resolver=dns).code == "address_not_allowed"
        assert echoed(fetch(rules(name, server.origin), name + "/echo", resolver=dns))["server"] == "six"
        assert len(server.requests) == 3
    finally:
        server.close()


def test_unresolvable_name_is_dns_failed() -> None:
    e = refused(rules("http://nowhere.test"), "http://nowhere.test/", resolver=Dns({}))
    assert e.code == "dns_failed" and "nowhere.test" in e.message
    e = refused(rules("http://junk.test"), "http://junk.test/", resolver=Dns({"junk.test": ["not-an-ip"]}))
    assert e.code == "dns_failed"


def test_idna_names_are_matched_in_their_ascii_form(upstream: Upstream) -> None:
    port = upstream.port
    dns = Dns({"xn--bcher-kva.example": ["127.0.0.1"]})
    granted = rules(f"http://bücher.example:{port}", upstream.origin)
    for url in (
        f"http://BÜCHER.example:{port}/echo",
        f"http://xn--bcher-kva.example:{port}/echo",
        f"http://bücher.ｅｘａｍｐｌｅ:{port}/echo",
    ):
        seen = echoed(fetch(granted, url, resolver=dns))
        assert ("host", f"xn--bcher-kva.example:{port}") in seen["headers"]
    assert set(dns.calls) == {"xn--bcher-kva.example"}
    # A look-alike is another name.
    assert refused(granted, f"http://bucher.example:{port}/echo", resolver=dns).code == "host_not_allowed"
