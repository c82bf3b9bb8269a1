from __future__ import annotations

from pathlib import Path

import pytest

from hive.settings import SETTINGS, Settings, load_settings, to_env


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """An empty TOML file, so the checkout's conf/hive.toml never leaks into a test."""
    path = tmp_path / "hive.toml"
    path.write_text("")
    return path


def env_with(config: Path, **env: str) -> dict[str, str]:
    return {"HIVE_CONFIG": str(config), **env}


def test_defaults(config: Path) -> None:
    s = load_settings(env=env_with(config))
    assert s == Settings(**{d.name: d.default for d in SETTINGS})
    assert s.workers == 2
    assert s.timeout_ms == 100
    assert s.memory_mb == 128
    assert s.max_request_bytes == s.max_response_bytes == 6 * 1024 * 1024
    assert s.admin_token is None
    assert s.access_log is False


def test_every_setting_has_an_env_name_and_help() -> None:
    for s in SETTINGS:
        assert s.env == "HIVE_" + s.name.upper()
        assert s.help


def test_toml_file_named_by_hive_config(config: Path) -> None:
    config.write_text('[server]\nworkers = 7\nbind = "0.0.0.0:9000"\naccess_log = true\nepoch_tick_ms = 2.5\n')
    s = load_settings(env=env_with(config))
    assert (s.workers, s.bind, s.access_log, s.epoch_tick_ms) == (7, "0.0.0.0:9000", True, 2.5)
    assert s.timeout_ms == 100  # untouched keys keep their defaults


def test_env_overrides_toml(config: Path) -> None:
    config.write_text("[server]\nworkers = 7\ntimeout_ms = 250\n")
    s = load_settings(env=env_with(config, HIVE_WORKERS="3", HIVE_ACCESS_LOG="yes", HIVE_ADMIN_TOKEN="t0k"))
    assert s.workers == 3
    assert s.timeout_ms == 250
    assert s.access_log is True
    assert s.admin_token == "t0k"


def test_env_values_are_converted(config: Path) -> None:
    s = load_settings(env=env_with(config, HIVE_EPOCH_TICK_MS="0.5", HIVE_ACCESS_LOG="off", HIVE_ADMIN_TOKEN=""))
    assert s.epoch_tick_ms == 0.5
    assert s.access_log is False
    assert s.admin_token is None


def test_explicit_overrides_win(config: Path) -> None:
    config.write_text("[server]\nworkers = 7\n")
    s = load_settings(env=env_with(config, HIVE_WORKERS="3"), overrides={"workers": 5, "bind": None})
    assert s.workers == 5
    assert s.bind == "127.0.0.1:8443"  # None means "not given"


def test_unknown_toml_key_raises(config: Path) -> None:
    config.write_text("[server]\nworkers = 2\nwrokers = 3\n")
    with pytest.raises(ValueError, match="wrokers"):
        load_settings(env=env_with(config))


def test_bad_value_raises(config: Path) -> None:
    with pytest.raises(ValueError):
        load_settings(env=env_with(config, HIVE_WORKERS="many"))


def test_to_env_round_trip(config: Path) -> None:
    s = load_settings(
        env=env_with(config),
        overrides={
            "data_dir": "/srv/hive",
            "workers": 9,
            "admin_token": "secret",
            "access_log": True,
            "epoch_tick_ms": 0.25,
            "keep_versions": 3,
        },
    )
    env = to_env(s)
    assert env["HIVE_ACCESS_LOG"] == "true"
    assert all(isinstance(v, str) for v in env.values())
    assert load_settings(env=env_with(config, **env)) == s


def test_to_env_round_trip_of_defaults_leaves_out_none(config: Path) -> None:
    s = load_settings(env=env_with(config))
    env = to_env(s)
    assert "HIVE_ADMIN_TOKEN" not in env
    assert load_settings(env=env_with(config, **env)) == s


def test_replace_converts_and_keeps_the_rest(config: Path) -> None:
    s = load_settings(env=env_with(config))
    r = s.replace(workers="4")
    assert r.workers == 4
    assert r.bind == s.bind
    assert s.workers == 2
