"""Settings: one declaration each, documented, with flag > env > file > default precedence."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pytest

from shipyard.errors import ConfigError
from shipyard.settings import SETTINGS, Settings, Spec, declared_settings, render_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_precedence() -> None:
    env = {"SHIPYARD_PORT": "9001", "SHIPYARD_LOG_LEVEL": "debug"}
    s = Settings(
        overrides={"port": 9100},
        file_values={"port": 9200, "capture_messages": "none", "log_level": "error"},
        environ=env,
    )
    assert s.port == 9100 and s.source("port") == "flag"
    assert s.log_level == "debug" and s.source("log_level") == "env"
    assert s.capture_messages == "none" and s.source("capture_messages") == "config"
    assert s.host == "127.0.0.1" and s.source("host") == "default"


def test_bad_values_name_the_setting_and_source() -> None:
    with pytest.raises(ConfigError, match=r"setting `port` from \$SHIPYARD_PORT must be int"):
        Settings(environ={"SHIPYARD_PORT": "eighty"})
    with pytest.raises(ConfigError, match="must be one of full, truncated, none"):
        Settings(file_values={"capture_messages": "some"}, environ={})
    with pytest.raises(ConfigError, match="unknown setting `prot`"):
        Settings(file_values={"prot": 1}, environ={})
    with pytest.raises(ConfigError, match="must be >= 1"):
        Settings(environ={"SHIPYARD_TRACE_BATCH_SIZE": "0"})


def test_home_and_store_url(tmp_path: Path) -> None:
    s = Settings(overrides={"home": str(tmp_path / "h")}, environ={})
    assert s.store_url == f"sqlite:///{tmp_path / 'h' / 'shipyard.db'}"
    s = Settings(environ={"SHIPYARD_DATABASE_URL": "postgresql+psycopg://u@h/db"})
    assert s.store_url == "postgresql+psycopg://u@h/db"


def test_every_setting_is_documented() -> None:
    for s in SETTINGS:
        assert s.help.strip(), f"setting `{s.name}` has no help text"
    doc = (ROOT / "docs" / "reference" / "settings.md").read_text()
    assert doc == render_markdown(), "docs/reference/settings.md is stale: run `make docs`"


def test_settings_are_typed_attributes_derived_from_one_declaration() -> None:
    """Each setting is an attribute of its declared type (mypy checks every use), and the table the
    docs and the parser read is derived from those declarations: the same names, types and defaults."""
    s = Settings(environ={"SHIPYARD_PORT": "9001", "SHIPYARD_SESSION_TTL": "90"})
    assert s.port == 9001 and type(s.port) is int
    assert s.session_ttl == 90.0 and type(s.session_ttl) is float
    assert s.database_url is None
    hints = Settings.__annotations__
    assert [t.name for t in SETTINGS] == [n for n in hints if not n.startswith("_")]
    for setting in SETTINGS:
        value = getattr(Settings(environ={}), setting.name)
        assert value == setting.default
        assert value is None or isinstance(value, setting.type), setting.name
    with pytest.raises(AttributeError):
        _ = s.not_a_setting  # type: ignore[attr-defined]


def test_a_setting_defaulting_to_none_must_say_so_in_its_type() -> None:
    class Broken:
        url: Annotated[str, Spec(None, "A URL.")]

    with pytest.raises(TypeError, match="defaults to None"):
        declared_settings(Broken)
