"""The SDK tests' fixtures live in tests/sdk/common.py with the rest of what they share; pytest finds them here."""

from tests.sdk.common import sandbox  # noqa: F401
