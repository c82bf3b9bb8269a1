from __future__ import annotations

import pytest

from hive.errors import InvalidManifest, InvalidName
from hive.manifest import DEFAULT_WASI, WASI_GROUPS, Limits, Manifest, parse_manifest, validate_name


@pytest.mark.parametrize("name", ["a", "hello", "hello-world", "img_resize2", "x" * 63, "a-", "deploy2"])
def test_validate_name_accepts(name: str) -> None:
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x",
        "a/b",
        "a\x00b",
        "Hello",
        "héllo",
        "функция",
        "x" * 64,
        "1abc",
        "-a",
        "_a",
        "a.b",
        "a b",
        "abc\n",
        "\nabc",
        None,
        3,
        b"abc",
    ],
)
def test_validate_name_rejects(name: object) -> None:
    with pytest.raises(InvalidName) as e:
        validate_name(name)
    assert e.value.code == "invalid_name"
    assert e.value.status == 400


def test_validate_name_rejects_reserved() -> None:
    with pytest.raises(InvalidName, match="reserved"):
        validate_name("deploy")


@pytest.mark.parametrize("raw", [None, b"", "", b"{}", "{}"])
def test_parse_manifest_defaults(raw: bytes | str | None) -> None:
    m = parse_manifest(raw)
    assert m == Manifest()
    assert m.limits == Limits()
    assert m.limits.timeout_ms is None
    assert m.wasi == list(DEFAULT_WASI)
    assert m.config == {}


def test_parse_manifest_full() -> None:
    m = parse_manifest(
        b'{"limits": {"timeout_ms": 250, "memory_mb": 16, "max_request_bytes": 0,'
        b' "max_response_bytes": 1024}, "wasi": ["clocks"], "config": {"GREETING": "hi"}}'
    )
    assert m.limits == Limits(timeout_ms=250, memory_mb=16, max_request_bytes=0, max_response_bytes=1024)
    assert m.wasi == ["clocks"]
    assert m.config == {"GREETING": "hi"}


@pytest.mark.parametrize(
    "key, value",
    [
        ("timeout_ms", 1),
        ("timeout_ms", 60_000),
        ("memory_mb", 1),
        ("memory_mb", 4096),
        ("max_request_bytes", 0),
        ("max_response_bytes", 1 << 30),
    ],
)
def test_limits_at_the_edges_of_their_range(key: str, value: int) -> None:
    m = parse_manifest(f'{{"limits": {{"{key}": {value}}}}}')
    assert getattr(m.limits, key) == value


@pytest.mark.parametrize(
    "key, value",
    [
        ("timeout_ms", 0),
        ("timeout_ms", 60_001),
        ("timeout_ms", -5),
        ("memory_mb", 0),
        ("memory_mb", 4097),
        ("max_request_bytes", -1),
        ("max_response_bytes", (1 << 30) + 1),
    ],
)
def test_limits_out_of_range(key: str, value: int) -> None:
    with pytest.raises(InvalidManifest, match=f"limits.{key}"):
        parse_manifest(f'{{"limits": {{"{key}": {value}}}}}')


@pytest.mark.parametrize(
    "raw",
    [
        b'{"limits": {"timeout_ms": "100"}}',
        b'{"limits": {"timeout_ms": true}}',
        b'{"limits": {"timeout_ms": 1.5}}',
        b'{"config": {"A": 1}}',
        b'{"wasi": "clocks"}',
        b"[]",
    ],
)
def test_wrong_types(raw: bytes) -> None:
    with pytest.raises(InvalidManifest):
        parse_manifest(raw)


@pytest.mark.parametrize("raw", [b'{"timeout": 5}', b'{"limits": {"cpu_ms": 5}}'])
def test_unknown_field(raw: bytes) -> None:
    with pytest.raises(InvalidManifest) as e:
        parse_manifest(raw)
    assert e.value.code == "invalid_manifest"
    assert e.value.status == 422


def test_unknown_wasi_group() -> None:
    with pytest.raises(InvalidManifest, match="sockets"):
        parse_manifest(b'{"wasi": ["clocks", "sockets"]}')


@pytest.mark.parametrize("raw", [b"{", b"not json", b'{"limits": }', b"\xff\xfe"])
def test_bad_json(raw: bytes) -> None:
    with pytest.raises(InvalidManifest, match="not valid JSON"):
        parse_manifest(raw)


@pytest.mark.parametrize("config", ['{"": "x"}', '{"A=B": "x"}', '{"A\\u0000": "x"}', '{"A": "x\\u0000"}'])
def test_bad_config_keys_and_values(config: str) -> None:
    with pytest.raises(InvalidManifest):
        parse_manifest(f'{{"config": {config}}}')


def test_the_harmless_wasi_groups_are_granted_by_default() -> None:
    assert Manifest().wasi == ["clocks", "random", "stdio", "env"]
    assert "clock_time_get" in Manifest().allowed_wasi_imports()
    assert Manifest(wasi=[]).allowed_wasi_imports() == WASI_GROUPS["process"]  # an explicit list is exact


def test_allowed_wasi_imports_all_groups() -> None:
    allowed = Manifest(wasi=list(WASI_GROUPS)).allowed_wasi_imports()
    for group in ("clocks", "random", "stdio", "env", "process"):
        assert WASI_GROUPS[group] <= allowed
    assert "path_open" not in allowed
    assert "sock_accept" not in allowed


def test_allowed_wasi_imports_only_what_is_granted() -> None:
    allowed = parse_manifest(b'{"wasi": ["random"]}').allowed_wasi_imports()
    assert allowed == WASI_GROUPS["random"] | WASI_GROUPS["process"]
    assert "clock_time_get" not in allowed
    assert "fd_write" not in allowed


def test_process_group_is_always_granted() -> None:
    assert parse_manifest(b'{"wasi": []}').allowed_wasi_imports() == WASI_GROUPS["process"]
