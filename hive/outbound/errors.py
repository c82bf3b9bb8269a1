"""Why a fetch was refused or failed: an error VALUE for the guest, not a HiveError.

A guest's fetch that is refused (policy, limits) or fails (network) must not fail the invocation:
the ABI layer turns a FetchRefused into an error value the guest can handle. So this is not a
HiveError (those become HTTP responses of the invocation itself); it carries a stable `code` and
a message that says what to grant or raise.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hive.errors import OutboundSetupError  # noqa: F401 - re-exported

if TYPE_CHECKING:
    from hive.outbound.client import FetchRecord

# The stable codes, with what each means. The guest sees the code; keep it in this set.
CODES: dict[str, str] = {
    "bad_url": "not an absolute http(s) URL that parses unambiguously (userinfo, backslash, bad host or port)",
    "bad_request": "an invalid method, header name or header value",
    "host_not_allowed": "no allowed_hosts entry matches the URL's scheme, host and port",
    "address_not_allowed": "the host is, or resolves to, a non-public address not granted as an IP literal",
    "dns_failed": "the host name did not resolve",
    "too_many_requests": "the invocation used up its fetch requests (each redirect hop counts)",
    "too_many_concurrent": "the invocation already has its maximum of fetches in flight",
    "request_too_large": "the request body or headers exceed the limit",
    "response_too_large": "the response body exceeds the limit (reading stopped there)",
    "connect_timeout": "resolving and connecting took longer than connect_timeout_ms",
    "timeout": "the whole fetch (all hops and the body) took longer than timeout_ms",
    "connect_failed": "the TCP connection was refused or unreachable",
    "tls_error": "the TLS handshake failed (certificate not trusted, expired, or for another host)",
    "protocol_error": "the upstream broke the HTTP exchange (invalid HTTP, closed or reset mid-message)",
    "too_many_redirects": "more than 5 redirects",
}


class FetchRefused(Exception):
    def __init__(self, code: str, message: str) -> None:
        assert code in CODES, code
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        # Filled in by Outbound.fetch: one record per hop tried, for the function log and metrics.
        self.records: tuple[FetchRecord, ...] = ()
