"""Outbound HTTP for guests: allow-listed, SSRF-safe, limited, on the worker's event loop.

hosts: one canonical reading of a host; rules: allowed_hosts; urls: a strict URL reader;
addresses: which IPs may be connected to; network: the httpcore backend that checks the address
it connects to; limits: FetchLimits and the per-invocation FetchBudget; client: Outbound.
"""

from hive.outbound.addresses import AddressPolicy, is_public
from hive.outbound.client import FetchRecord, FetchRequest, FetchResponse, Outbound
from hive.outbound.errors import CODES, FetchRefused, OutboundSetupError
from hive.outbound.limits import MAX_REDIRECTS, FetchBudget, FetchLimits
from hive.outbound.network import Resolver, system_resolver
from hive.outbound.rules import HostRule, parse_allowed_hosts
from hive.outbound.urls import Url, parse_url

__all__ = [
    "CODES",
    "MAX_REDIRECTS",
    "AddressPolicy",
    "FetchBudget",
    "FetchLimits",
    "FetchRecord",
    "FetchRefused",
    "FetchRequest",
    "FetchResponse",
    "HostRule",
    "Outbound",
    "OutboundSetupError",
    "Resolver",
    "Url",
    "is_public",
    "parse_allowed_hosts",
    "parse_url",
    "system_resolver",
]
