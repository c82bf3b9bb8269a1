"""Redirects are followed by hand: at most 5, each hop re-checked against the rules and the address policy."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from hive.outbound import FetchLimits
from tests.outbound.common import Dns, Upstream, echoed, fetch, refused, rules


def redirect(up: Upstream, to: str, code: int = 302) -> str:
    return up.url(f"/redirect?code={code}&to={quote(to, safe='')}")


def test_follows_a_chain_of_five(upstream: Upstream) -> None:
    response = fetch(rules(upstream.origin), upstream.url("/chain/5"))
    assert response.status == 200 and response.body == b"end of chain"
    assert response.url == upstream.url("/chain/0")
    assert [r.status for r in response.records] == [302] * 5 + [200]


def test_six_redirects_are_too_many(upstream: Upstream) -> None:
    e = refused(rules(upstream.origin), upstream.url("/chain/6"))
    assert e.code == "too_many_redirects" and "/chain/0" in e.message
    assert len(upstream.requests) == 6  # the sixth redirect was not followed


def test_each_hop_counts_as_a_request(upstream: Upstream) -> None:
    e = refused(rules(upstream.origin), upstream.url("/chain/5"), limits=FetchLimits(max_requests=3))
    assert e.code == "too_many_requests"
    assert len(upstream.requests) == 3


def test_redirect_to_a_host_not_allowed_is_a_refusal(upstream: Upstream, other: Upstream) -> None:
    e = refused(rules(upstream.origin), redirect(upstream, other.url("/echo")))
    assert e.code == "host_not_allowed" and "reached by a redirect" in e.message and other.origin in e.message
    assert other.requests == []
    assert [r.status for r in e.records] == [302, None]


def test_redirect_to_cloud_metadata_is_refused(upstream: Upstream) -> None:
    e = refused(rules(upstream.origin), redirect(upstream, "http://169.254.169.254/latest/meta-data/"))
    assert e.code == "host_not_allowed"
    e = refused(rules(upstream.origin), redirect(upstream, "http://0xa9fea9fe/latest/meta-data/"))
    assert e.code == "host_not_allowed" and "169.254.169.254" in e.message


def test_redirect_to_an_allowed_name_that_resolves_to_a_private_ip(upstream: Upstream) -> None:
    """The name is allowed, its address is not: the hop's address is checked like the first one's."""
    dns = Dns({"internal.example.test": ["10.1.2.3"]})
    allowed = rules(upstream.origin, "http://internal.example.test")
    e = refused(allowed, redirect(upstream, "http://internal.example.test/admin"), resolver=dns)
    assert e.code == "address_not_allowed" and "10.1.2.3" in e.message
    assert dns.calls == ["internal.example.test"]


def test_redirect_to_loopback_by_another_spelling(upstream: Upstream, other: Upstream) -> None:
    e = refused(rules(upstream.origin), redirect(upstream, f"http://2130706433:{other.port}/echo"))
    assert e.code == "host_not_allowed" and f"127.0.0.1:{other.port}" in e.message
    assert other.requests == []


def test_redirect_to_a_bad_url(upstream: Upstream) -> None:
    e = refused(rules(upstream.origin), redirect(upstream, f"http://127.0.0.1:{upstream.port}@evil.test/"))
    assert e.code == "bad_url"
    assert len(upstream.requests) == 1


def test_redirect_to_another_allowed_host(upstream: Upstream, other: Upstream) -> None:
    response = fetch(rules(upstream.origin, other.origin), redirect(upstream, other.url("/echo")))
    assert echoed(response)["server"] == "B" and response.url == other.url("/echo")


@pytest.mark.parametrize(
    "code, method, then_method, keeps_body",
    [
        (301, "POST", "GET", False),
        (302, "POST", "GET", False),
        (303, "POST", "GET", False),
        (303, "PUT", "GET", False),
        (303, "HEAD", "HEAD", False),
        (301, "PUT", "PUT", True),
        (302, "DELETE", "DELETE", False),
        (307, "POST", "POST", True),
        (308, "PUT", "PUT", True),
        (307, "GET", "GET", False),
    ],
)
def test_methods_across_redirects(
    upstream: Upstream, code: int, method: str, then_method: str, keeps_body: bool
) -> None:
    body = b"payload" if method in ("POST", "PUT") else b""
    response = fetch(
        rules(upstream.origin),
        redirect(upstream, "/echo", code),
        method=method,
        body=body,
        headers=[("Content-Type", "text/plain")],
    )
    assert response.status == 200
    final = upstream.requests[-1]
    assert final["method"] == then_method
    headers = dict(final["headers"])
    if keeps_body:
        assert final["body"] == "payload" and headers.get("content-type") == "text/plain"
    else:
        assert final["body"] == ""
        if then_method == "GET" and method != "GET":
            assert "content-type" not in headers and "content-length" not in headers


def test_credentials_are_stripped_across_origins(upstream: Upstream, other: Upstream) -> None:
    secrets = [("Authorization", "Bearer s3cret"), ("Cookie", "session=1"), ("X-Kept", "yes")]
    fetch(rules(upstream.origin, other.origin), redirect(upstream, other.url("/echo")), headers=secrets)
    first, second = dict(upstream.requests[0]["headers"]), dict(other.requests[0]["headers"])
    assert first["authorization"] == "Bearer s3cret" and first["cookie"] == "session=1"
    assert "authorization" not in second and "cookie" not in second and second["x-kept"] == "yes"


def test_credentials_are_kept_on_the_same_origin(upstream: Upstream) -> None:
    fetch(rules(upstream.origin), redirect(upstream, "/echo"), headers=[("Authorization", "Bearer s3cret")])
    assert dict(upstream.requests[1]["headers"])["authorization"] == "Bearer s3cret"


def test_a_redirect_without_location_or_a_300_is_returned(upstream: Upstream) -> None:
    assert fetch(rules(upstream.origin), upstream.url("/status/302")).status == 302
    assert fetch(rules(upstream.origin), redirect(upstream, "/echo", 300)).status == 300
    assert fetch(rules(upstream.origin), redirect(upstream, "/echo", 304)).status == 304
