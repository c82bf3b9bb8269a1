"""hive.abi against the shared byte-level vectors (hive/sdk/abi_vectors.json) and docs/abi.md."""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hive import abi
from hive.errors import AbiViolation

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads((ROOT / "hive" / "sdk" / "abi_vectors.json").read_text(encoding="utf-8"))
MAX_BODY = 6 << 20


def _headers(pairs: list[list[str]]) -> abi.Headers:
    return [(n.encode(), v.encode()) for n, v in pairs]


def _ids(vectors: list[dict]) -> list[str]:
    return [v["name"] for v in vectors]


@pytest.mark.parametrize("v", VECTORS["requests"], ids=_ids(VECTORS["requests"]))
def test_request_vector(v: dict) -> None:
    fields = (
        v["method"].encode(),
        v["path"].encode(),
        v["query"].encode(),
        _headers(v["headers"]),
        bytes.fromhex(v["body_hex"]),
    )
    env = bytes.fromhex(v["envelope_hex"])
    assert abi.encode_request(*fields) == env
    assert abi.decode_request(env) == abi.Request(*fields)
    assert abi.decode_request(memoryview(env)) == abi.Request(*fields)


@pytest.mark.parametrize("v", VECTORS["responses"], ids=_ids(VECTORS["responses"]))
def test_response_vector(v: dict) -> None:
    body = bytes.fromhex(v["body_hex"])
    env = bytes.fromhex(v["envelope_hex"])
    assert abi.encode_response(abi.Response(v["status"], _headers(v["headers"]), body)) == env
    decoded = abi.Response(v["status"], _headers(v.get("decoded_headers", v["headers"])), body)
    assert abi.decode_response(env, MAX_BODY) == decoded
    assert abi.decode_response(memoryview(env), len(body)) == decoded


@pytest.mark.parametrize("v", VECTORS["invalid_responses"], ids=_ids(VECTORS["invalid_responses"]))
def test_invalid_response_vector(v: dict) -> None:
    with pytest.raises(AbiViolation):
        abi.decode_response(bytes.fromhex(v["envelope_hex"]), MAX_BODY)


@pytest.mark.parametrize("v", VECTORS["invalid_requests"], ids=_ids(VECTORS["invalid_requests"]))
def test_invalid_request_vector(v: dict) -> None:
    with pytest.raises(AbiViolation):
        abi.decode_request(bytes.fromhex(v["envelope_hex"]))


def test_body_over_the_limit() -> None:
    env = abi.encode_response(abi.Response(200, [], b"12345"))
    assert abi.decode_response(env, 5).body == b"12345"
    with pytest.raises(AbiViolation, match="limit"):
        abi.decode_response(env, 4)


def test_split_packed() -> None:
    assert abi.split_packed((0x10 << 32) | 0x20) == (0x10, 0x20)
    assert abi.split_packed(-1) == (0xFFFF_FFFF, 0xFFFF_FFFF)  # wasmtime returns i64 signed
    assert abi.split_packed(-(1 << 63)) == (0x8000_0000, 0)


def test_docs_examples_match_vectors() -> None:
    """Every annotated hex dump in docs/abi.md must be byte-for-byte a vector."""
    doc = (ROOT / "docs" / "abi.md").read_text(encoding="utf-8")
    blocks = re.findall(r"<!-- vector: (\w+)/(\w+) -->\s*```text\n(.*?)```", doc, re.S)
    assert len(blocks) >= 2
    for kind, name, text in blocks:
        hexes = [line.split("  ")[0] for line in text.splitlines() if line.strip()]
        (vector,) = [v for v in VECTORS[kind] if v["name"] == name]
        assert bytes.fromhex("".join(hexes)) == bytes.fromhex(vector["envelope_hex"]), name


_TCHARS = "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyz"
_names = (
    st.text(_TCHARS, min_size=1, max_size=abi.MAX_HEADER_NAME)
    .map(str.encode)
    .filter(lambda n: n not in abi._HOP_BY_HOP)
)
_CONTROLS = bytes(c for c in range(32) if c != 9) + b"\x7f"  # what a header value may not hold
_values = st.binary(max_size=64).map(lambda b: b.translate(None, _CONTROLS))
_responses = st.builds(
    abi.Response, st.integers(200, 599), st.lists(st.tuples(_names, _values), max_size=8), st.binary(max_size=256)
)


@given(_responses)
def test_response_roundtrip(resp: abi.Response) -> None:
    assert abi.decode_response(abi.encode_response(resp), len(resp.body)) == resp


@given(
    st.binary(max_size=8),
    st.binary(max_size=32),
    st.binary(max_size=16),
    st.lists(st.tuples(st.binary(max_size=16), st.binary(max_size=16)), max_size=6),
    st.binary(max_size=64),
)
def test_request_roundtrip(method: bytes, path: bytes, query: bytes, headers: abi.Headers, body: bytes) -> None:
    env = abi.encode_request(method, path, query, headers, body)
    assert abi.decode_request(env) == abi.Request(method, path, query, headers, body)


def _decode_or_violation(data: bytes) -> None:
    with contextlib.suppress(AbiViolation):
        abi.decode_response(data, 64)
    with contextlib.suppress(AbiViolation):
        abi.decode_request(data)


@given(st.binary(max_size=128))
def test_random_bytes_only_raise_abi_violation(data: bytes) -> None:
    _decode_or_violation(data)


@given(_responses, st.data())
def test_mutated_envelopes_only_raise_abi_violation(resp: abi.Response, data: st.DataObject) -> None:
    # Mutating a valid envelope gets much deeper into the decoder than random bytes do.
    env = bytearray(abi.encode_response(resp))
    pos = data.draw(st.integers(0, len(env) - 1))
    match data.draw(st.integers(0, 3)):
        case 0:
            del env[pos:]
        case 1:
            env[pos] = data.draw(st.integers(0, 255))
        case 2:
            env[pos : pos + 4] = data.draw(st.integers(0, 0xFFFF_FFFF)).to_bytes(4, "little")
        case _:
            env += data.draw(st.binary(min_size=1, max_size=4))
    _decode_or_violation(bytes(env))
