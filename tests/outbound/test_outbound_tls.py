"""TLS: certificates are always verified, against the host NAME, while the socket goes to the checked IP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from hive.outbound import Outbound, OutboundSetupError
from tests.outbound.common import Dns, Pki, Upstream, echoed, fetch, make_pki, refused, rules


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def tls_upstream(pki: Pki, **cert: object) -> Upstream:
    return Upstream(tag="tls", tls=pki.server_context(**cert)).start()  # type: ignore[arg-type]


@pytest.fixture
def sni() -> list[str]:
    return []


@pytest.fixture
def good(pki: Pki, sni: list[str]) -> Iterator[Upstream]:
    server = tls_upstream(pki, sni_seen=sni)
    yield server
    server.close()


def name_url(server: Upstream, name: str = "api.example.test", path: str = "/echo") -> str:
    return f"https://{name}:{server.port}{path}"


def test_https_to_a_name_verifies_the_name_and_sends_sni(pki: Pki, good: Upstream, sni: list[str]) -> None:
    dns = Dns({"api.example.test": ["127.0.0.1"]})
    allowed = rules(f"https://api.example.test:{good.port}", good.origin)
    response = fetch(allowed, name_url(good), resolver=dns, ca_file=str(pki.ca_file))
    assert echoed(response)["server"] == "tls"
    assert response.records[0].address == "127.0.0.1"
    assert sni == ["api.example.test"]


def test_https_to_an_ip_literal_verifies_the_ip_san(pki: Pki, good: Upstream) -> None:
    assert echoed(fetch(rules(good.origin), good.url("/echo"), ca_file=str(pki.ca_file)))["server"] == "tls"


def test_the_test_ca_is_not_trusted_without_ca_file(good: Upstream) -> None:
    e = refused(rules(good.origin), good.url("/echo"))
    assert e.code == "tls_error" and "certificate" in e.message.lower()
    assert good.requests == []


def test_a_certificate_for_another_host_fails(pki: Pki, good: Upstream) -> None:
    """The cert names api.example.test; a name that resolves to the same IP must not pass with it."""
    dns = Dns({"other.example.test": ["127.0.0.1"]})
    allowed = rules(f"https://other.example.test:{good.port}", good.origin)
    e = refused(allowed, name_url(good, "other.example.test"), resolver=dns, ca_file=str(pki.ca_file))
    assert e.code == "tls_error"
    assert good.requests == []


def test_a_wrong_host_certificate_fails(pki: Pki) -> None:
    server = tls_upstream(pki, names=("wrong.test",), ips=())
    try:
        dns = Dns({"api.example.test": ["127.0.0.1"]})
        allowed = rules(f"https://api.example.test:{server.port}", server.origin)
        e = refused(allowed, name_url(server), resolver=dns, ca_file=str(pki.ca_file))
        assert e.code == "tls_error" and "api.example.test" in e.message
        assert refused(rules(server.origin), server.url("/echo"), ca_file=str(pki.ca_file)).code == "tls_error"
        assert server.requests == []
    finally:
        server.close()


def test_an_expired_certificate_fails(pki: Pki) -> None:
    server = tls_upstream(pki, expired=True)
    try:
        dns = Dns({"api.example.test": ["127.0.0.1"]})
        allowed = rules(f"https://api.example.test:{server.port}", server.origin)
        e = refused(allowed, name_url(server), resolver=dns, ca_file=str(pki.ca_file))
        assert e.code == "tls_error" and "expired" in e.message
        assert server.requests == []
    finally:
        server.close()


def test_https_to_a_plain_http_server_is_a_tls_error(upstream: Upstream, pki: Pki) -> None:
    origin = f"https://127.0.0.1:{upstream.port}"
    assert refused(rules(origin), origin + "/echo", ca_file=str(pki.ca_file)).code == "tls_error"


def test_redirect_from_https_to_http_is_rechecked(pki: Pki, good: Upstream, upstream: Upstream) -> None:
    """A downgrade is just another hop: refused unless the http origin is granted too."""
    from urllib.parse import quote

    to = quote(upstream.url("/echo"), safe="")
    url = good.url(f"/redirect?to={to}")
    assert refused(rules(good.origin), url, ca_file=str(pki.ca_file)).code == "host_not_allowed"
    response = fetch(rules(good.origin, upstream.origin), url, ca_file=str(pki.ca_file))
    assert echoed(response)["server"] == "A"


def test_an_unreadable_ca_file_is_a_setup_error(tmp_path: Path) -> None:
    with pytest.raises(OutboundSetupError) as info:
        Outbound(ca_file=str(tmp_path / "missing.pem"))
    assert info.value.code == "outbound_setup_failed" and "outbound_ca_file" in info.value.message
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(OutboundSetupError):
        Outbound(ca_file=str(junk))
