"""Server defaults live in the settings table only: the CLI's flags and the client's default URL are
generated from it (as gunicorn's CLI comes from its settings)."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from hive.cli import main
from hive.settings import DEFAULT_URL, SETTINGS, reachable_host, setting, url_of


def options(command: click.Command) -> dict[str, click.Option]:
    return {flag: p for p in command.params if isinstance(p, click.Option) for flag in p.opts}


def test_serve_has_a_flag_for_each_setting_marked_for_the_cli() -> None:
    serve = options(main.commands["serve"])
    marked = [s for s in SETTINGS if s.cli]
    assert {s.cli for s in marked} >= {"--bind", "--workers", "--data-dir"}  # the flags users know
    for s in marked:
        opt = serve[s.cli]  # type: ignore[index]
        assert opt.name == s.name and opt.default is None  # unset: the TOML file and HIVE_* still apply
        assert opt.help == f"{s.help} (default {s.default})"
    assert serve["--workers"].type is click.INT
    assert "--config" in serve


@pytest.mark.parametrize("command", ["reload", "status"])
def test_reload_and_status_take_the_data_dir_flag_from_the_table(command: str) -> None:
    opt = options(main.commands[command])["--data-dir"]
    assert opt.name == "data_dir" and opt.default is None
    assert opt.help == f"the server's data dir (default {setting('data_dir').default})"


def test_the_default_url_is_the_bind_settings_default() -> None:
    assert DEFAULT_URL == url_of(setting("bind").default) == "http://127.0.0.1:8443"
    group = main.commands["function"]
    assert isinstance(group, click.Group)
    assert options(group)["--url"].default == DEFAULT_URL


def test_url_of_a_bind_address() -> None:
    assert url_of("127.0.0.1:9000") == "http://127.0.0.1:9000"
    assert url_of("0.0.0.0:9000") == "http://127.0.0.1:9000"  # every address: reached on loopback
    assert url_of("[::]:9000") == "http://[::1]:9000"
    assert url_of("[::1]:9000") == "http://[::1]:9000"
    assert url_of("example.test:80") == "http://example.test:80"
    assert reachable_host("::") == "::1" and reachable_host("10.0.0.1") == "10.0.0.1"


def test_a_bad_flag_value_is_a_usage_error(tmp_path: Path) -> None:
    r = CliRunner().invoke(main, ["serve", "--workers", "many", "--data-dir", str(tmp_path)])
    assert r.exit_code == 2 and "--workers" in r.output


def test_settings_lists_every_setting_with_its_flag(tmp_path: Path) -> None:
    config = tmp_path / "hive.toml"
    config.write_text("")
    r = CliRunner().invoke(main, ["settings"], env={"HIVE_CONFIG": str(config), "HIVE_WORKERS": "5"})
    assert r.exit_code == 0, r.output
    lines = r.output.splitlines()
    assert [line.split()[0] for line in lines] == [s.name for s in SETTINGS]
    workers = lines[[s.name for s in SETTINGS].index("workers")]
    assert workers.split()[:3] == ["workers", "HIVE_WORKERS", "5"] and workers.endswith("[--workers]")
