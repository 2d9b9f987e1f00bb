"""Configuration precedence and validation: defaults < TOML file < WHARF_* env < flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from wharf.config import ConfigError, load_settings


def test_defaults():
    s = load_settings(None, {}, environ={})
    assert s.data_dir == Path("wharf-data")
    assert s.http_addr == "127.0.0.1:5000"
    assert s.workers == 1
    assert s.db_url == f"sqlite:///{Path('wharf-data').resolve() / 'wharf.db'}"
    assert s.storage_url == f"file://{Path('wharf-data').resolve() / 'storage'}"


def test_precedence(tmp_path):
    f = tmp_path / "wharf.toml"
    f.write_text('workers = 2\nlog_level = "debug"\nhttp_addr = "127.0.0.1:6000"\n')
    env = {"WHARF_WORKERS": "3", "WHARF_ACCESS_LOG": "true", "WHARF_LOG_LEVEL": "warning"}
    s = load_settings(f, {"workers": 4, "data_dir": None}, environ=env)
    assert s.workers == 4  # flag beats env beats file
    assert s.log_level == "warning"  # env beats file
    assert s.http_addr == "127.0.0.1:6000"  # file beats default
    assert s.access_log is True


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nope = 1\n", "unknown settings"),
        ("workers = 'many'\n", "workers"),
        ("workers = 0\n", "workers"),
        ("log_level = 'loud'\n", "log_level"),
        ("[x\n", "cannot read"),
    ],
)
def test_bad_files_are_refused_with_the_reason(tmp_path, text, message):
    f = tmp_path / "wharf.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_settings(f, {}, environ={})


def test_plain_http_beyond_loopback_needs_consent():
    with pytest.raises(ConfigError, match="--plain-http"):
        load_settings(None, {"http_addr": "0.0.0.0:80"}, environ={}).check()
    load_settings(None, {"http_addr": "0.0.0.0:80", "plain_http": True}, environ={}).check()
    load_settings(None, {"http_addr": "[::1]:80"}, environ={}).check()
    with pytest.raises(ConfigError, match="HOST:PORT"):
        load_settings(None, {"http_addr": "nowhere"}, environ={}).check()
