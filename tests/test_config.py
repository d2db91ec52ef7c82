"""Configuration: vidurai.ini, VIDURAI_CONFIG, VIDURAI_<SECTION>_<KEY> overrides and clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import attrs
import pytest

from proxy.config import SETTINGS, ConfigError, Setting, load_config, render_default_ini

REPO_INI = Path(__file__).resolve().parent.parent / "vidurai.ini"


def _write(tmp_path: Path, text: str, name: str = "custom.ini") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_zero_configuration_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(tmp_path / "absent.ini", env={})
    assert (config.server.host, config.server.port, config.server.max_body_mb) == ("127.0.0.1", 8080, 64)
    assert config.upstream.anthropic_base_url == "https://api.anthropic.com"
    assert config.upstream.openai_base_url == "https://api.openai.com/v1"
    assert config.upstream.connect_timeout > 0 and config.upstream.read_timeout > 0
    assert config.storage.database == str(tmp_path / "vidurai.db")  # no file: the working directory
    assert config.source == "defaults"


def test_shipped_ini_loads_and_matches_the_declared_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO_INI.parent)  # so the default database, beside the file or here, is one path
    shipped = load_config(REPO_INI, env={})
    assert attrs.evolve(shipped, source="") == attrs.evolve(
        load_config(tmp_path / "absent.ini", env={}), source=""
    )
    # Every key is documented in the file, with its help text and allowed values.
    assert REPO_INI.read_text(encoding="utf-8") == render_default_ini()


def test_ini_file_is_read(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "[server]\nport = 9001\nhost = 0.0.0.0\n\n"
        "[upstream]\nread_timeout = 30.5\n"
        "openai_base_url = http://localhost:11434/v1/\n\n"
        "[storage]\ndatabase = /tmp/x.db\n",
    )
    config = load_config(path, env={})
    assert (config.server.host, config.server.port) == ("0.0.0.0", 9001)
    assert config.upstream.read_timeout == 30.5
    assert config.upstream.openai_base_url == "http://localhost:11434/v1"  # trailing slash dropped
    assert config.storage.database == "/tmp/x.db"
    assert config.server.max_body_mb == 64  # keys not in the file keep their defaults


def test_vidurai_config_names_another_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[server]\nport = 9100\n", "elsewhere.ini")
    config = load_config(env={"VIDURAI_CONFIG": str(path)})
    assert config.server.port == 9100
    assert config.source == str(path)


def test_vidurai_config_missing_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="VIDURAI_CONFIG"):
        load_config(env={"VIDURAI_CONFIG": str(tmp_path / "nope.ini")})


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[server]\nport = 9001\n\n[upstream]\nconnect_timeout = 3\n")
    env = {
        "VIDURAI_SERVER_PORT": "9000",
        "VIDURAI_UPSTREAM_ANTHROPIC_BASE_URL": "http://127.0.0.1:1/x",
        "VIDURAI_COMPRESSION_ENABLED": "false",
    }
    config = load_config(path, env=env)
    assert config.server.port == 9000
    assert config.upstream.connect_timeout == 3  # from the file, no variable set
    assert config.upstream.anthropic_base_url == "http://127.0.0.1:1/x"
    assert config.compression.enabled is False


def _non_default_sample(setting: Setting) -> str:
    """A raw value the setting accepts that differs from its default."""
    default = setting.parse(setting.default)
    candidates = []
    for number in (int, float):
        try:
            candidates.append(str(number(setting.default) + 1))
        except ValueError:
            pass
    candidates += ["0.5", "1", "http://example.test:1234", "redis://127.0.0.1:6379/0", "false", "true"]
    candidates += ["debug", "off", "on", "closed", "model", "sample"]
    for raw in candidates:
        try:
            if setting.parse(raw) != default:
                return raw
        except ValueError:
            continue
    raise AssertionError(f"no sample value for {setting.env_var}")


@pytest.mark.parametrize("setting", SETTINGS, ids=lambda s: s.env_var)
def test_every_key_has_an_environment_variable(setting: Setting, tmp_path: Path) -> None:
    assert setting.env_var == f"VIDURAI_{setting.section}_{setting.key}".upper()
    sample = _non_default_sample(setting)
    config = load_config(tmp_path / "absent.ini", env={setting.env_var: sample})
    expected = setting.parse(sample)
    if setting.is_path:  # from a variable: against the working directory
        expected = os.path.abspath(expected)
    assert getattr(getattr(config, setting.section), setting.key) == expected


@pytest.mark.parametrize(
    "env_var, raw, key",
    [
        ("VIDURAI_SERVER_PORT", "eighty", "[server] port"),
        ("VIDURAI_SERVER_PORT", "70000", "[server] port"),
        ("VIDURAI_SERVER_MAX_BODY_MB", "0", "[server] max_body_mb"),
        ("VIDURAI_UPSTREAM_READ_TIMEOUT", "-1", "[upstream] read_timeout"),
        ("VIDURAI_UPSTREAM_CONNECT_TIMEOUT", "soon", "[upstream] connect_timeout"),
        ("VIDURAI_UPSTREAM_ANTHROPIC_BASE_URL", "api.anthropic.com", "[upstream] anthropic_base_url"),
        ("VIDURAI_UPSTREAM_OPENAI_BASE_URL", "ftp://example.test/v1", "[upstream] openai_base_url"),
        ("VIDURAI_COMPRESSION_ENABLED", "maybe", "[compression] enabled"),
        ("VIDURAI_LOGGING_LEVEL", "loud", "[logging] level"),
    ],
)
def test_invalid_value_names_the_key(env_var: str, raw: str, key: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "absent.ini", env={env_var: raw})
    message = str(caught.value)
    assert "\n" not in message
    assert key in message and raw in message and env_var in message
    assert "expected" in message


def test_invalid_value_in_file_names_key_and_file(tmp_path: Path) -> None:
    path = _write(tmp_path, "[upstream]\nread_timeout = forever\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert "[upstream] read_timeout" in message and str(path) in message and "\n" not in message


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("[server]\nprot = 8080\n", "prot"),
        ("[sever]\nport = 8080\n", "sever"),
        ("[server\nport = 8080\n", "custom.ini"),
    ],
)
def test_unknown_or_broken_file_content_is_an_error(text: str, fragment: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(_write(tmp_path, text), env={})
    assert fragment in str(caught.value) and "\n" not in str(caught.value)


def test_test_overrides_win_and_unknown_override_is_an_error(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.ini", env={"VIDURAI_SERVER_PORT": "9000"}, server_port="9001")
    assert config.server.port == 9001
    with pytest.raises(ConfigError, match="server_prot"):
        load_config(tmp_path / "absent.ini", env={}, server_prot="1")


def test_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(tmp_path / "absent.ini", env={})
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.server.port = 1  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.server = config.server  # type: ignore[misc]


def test_readme_table_gives_every_key_its_default_and_variable() -> None:
    """The README's configuration table is written by hand: a default changed in proxy/config.py
    must be changed there too."""
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    rows = {}
    for line in readme.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("| `[") and len(cells) >= 4:
            rows[cells[0]] = (cells[1], cells[2])
    documented = {f"`[{s.section}] {s.key}`": rows.get(f"`[{s.section}] {s.key}`") for s in SETTINGS}
    expected = {
        f"`[{s.section}] {s.key}`": (f"`{s.default}`" if s.default else "(empty)", f"`{s.env_var}`")
        for s in SETTINGS
    }
    assert documented == expected


def test_relative_paths_in_a_file_resolve_beside_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    instance, elsewhere = tmp_path / "instance", tmp_path / "elsewhere"
    instance.mkdir()
    elsewhere.mkdir()
    path = _write(instance, "[storage]\ndatabase = team.db\n\n[logging]\nfile = logs/proxy.log\n")
    monkeypatch.chdir(elsewhere)
    config = load_config(env={"VIDURAI_CONFIG": "../instance/custom.ini"})
    assert config.source == str(path)
    assert config.storage.database == str(instance / "team.db")
    assert config.logging.file == str(instance / "logs" / "proxy.log")
    # A default, with a file in use, is beside the file too: the file names this instance.
    config = load_config(_write(instance, "[server]\nport = 9\n", "bare.ini"), env={})
    assert config.storage.database == str(instance / "vidurai.db")
    assert config.logging.file == ""  # empty stays empty


def test_relative_paths_from_variables_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, "[storage]\ndatabase = from-file.db\n")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    env = {"VIDURAI_STORAGE_DATABASE": "from-env.db", "VIDURAI_LOGGING_FILE": "~/proxy.log"}
    config = load_config(path, env=env)
    assert config.storage.database == str(work / "from-env.db")
    assert config.logging.file == str(Path.home() / "proxy.log")
    assert load_config(path, env={}, storage_database="/abs/x.db").storage.database == "/abs/x.db"


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "VIDURAI_SERVER_PROT",
            "VIDURAI_SERVER_PROT names no setting; did you mean VIDURAI_SERVER_PORT ([server] port)?",
        ),
        ("VIDURAI_STORAGE_DATABSE", "did you mean VIDURAI_STORAGE_DATABASE ([storage] database)?"),
        ("VIDURAI_CONFIGG", "VIDURAI_CONFIGG names no setting; did you mean VIDURAI_CONFIG?"),
        ("VIDURAI_XYZ", "VIDURAI_XYZ names no setting; settings are VIDURAI_<SECTION>_<KEY>"),
    ],
)
def test_unknown_vidurai_variable_names_the_closest_setting(name: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(tmp_path / "absent.ini", env={name: "9001"})
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_vidurai_config_and_settings_variables_are_allowed(tmp_path: Path) -> None:
    path = _write(tmp_path, "")
    env = {"VIDURAI_CONFIG": str(path), **{s.env_var: s.default for s in SETTINGS}, "OTHER_PROT": "1"}
    assert load_config(env=env).source == str(path)


def test_a_postgresql_url_is_kept_as_written_not_made_a_path(tmp_path: Path) -> None:
    url = "postgresql://vidurai:secret@db.internal:5432/vidurai"
    path = _write(tmp_path, f"[storage]\ndatabase = {url}\n")
    assert load_config(path, env={}).storage.database == url
    from_env = load_config(tmp_path / "absent.ini", env={"VIDURAI_STORAGE_DATABASE": url})
    assert from_env.storage.database == url
