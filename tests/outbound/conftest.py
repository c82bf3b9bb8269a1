"""The outbound tests' fixtures live in tests/outbound/common.py with the rest of what they share."""

from tests.outbound.common import other, upstream  # noqa: F401
