"""Configuration: parsing, all-at-once errors, and agreement of code, docs and example."""

from __future__ import annotations

import re
import tomllib
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from boshd.config import (
    SECTIONS,
    Config,
    UpstreamTarget,
    config_path,
    describe_keys,
    load_config,
    parse_config,
)
from boshd.configdoc import render
from boshd.core.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_is_valid_and_lists_defaults() -> None:
    """conf/boshd.toml parses and every value in it is the documented default."""
    config = load_config(ROOT / "conf" / "boshd.toml")
    defaults = Config()
    for section in ("server", "log", "bosh", "websocket", "limits"):
        assert getattr(config, section) == getattr(defaults, section), section
    assert config.upstream.connect_timeout == defaults.upstream.connect_timeout
    assert config.upstream.domains["localhost"].port == 5222


def test_every_key_is_in_the_example_and_the_docs() -> None:
    """Each declared key appears in conf/boshd.toml (domain keys in its domain table, issue 16:
    ca_file was missing) and docs/configuration.md; the docs are exactly what boshd.configdoc
    renders."""
    raw = tomllib.loads((ROOT / "conf" / "boshd.toml").read_text())
    docs = (ROOT / "docs" / "configuration.md").read_text()
    assert docs == render(), "regenerate: python -m boshd.configdoc > docs/configuration.md"
    (example_domain,) = raw["upstream"]["domains"].values()
    for row in describe_keys():
        assert row.meaning, f"{row.key} has no description"
        assert f"`{row.key}`" in docs
        if row.key.startswith("upstream.domains"):
            name = row.key.rpartition(".")[2]
            assert name in example_domain, f"{row.key} missing from conf/boshd.toml"
            continue
        section, name = row.key.split(".", 1)
        assert name in raw[section], f"{row.key} missing from conf/boshd.toml"


def test_docs_list_the_allowed_values_of_every_key() -> None:
    """Every key's row in docs/configuration.md says what it accepts; a key that takes one of
    a few words (log.level, log.format, auth.mode, tls...) lists each of them (issue 16)."""
    docs = (ROOT / "docs" / "configuration.md").read_text()
    rows = {line.split("|")[1].strip(" `"): line for line in docs.splitlines() if "| `" in line}
    tables: list[tuple[str, type[Any]]] = [*SECTIONS.items()]
    tables.append(('upstream.domains."<domain>"', UpstreamTarget))
    enums = 0
    for prefix, cls in tables:
        for f in fields(cls):
            if f.name == "domains":
                continue
            key = f"{prefix}.{f.name}"
            allowed = rows[key].split("|")[3].strip()
            assert allowed, key
            choices = getattr(f.metadata["parse"], "choices", None)
            if choices:
                enums += 1
                assert allowed == ", ".join(f"`{c}`" for c in choices), key
    assert enums >= 6
    assert '| `log.level` | `"info"` | `debug`, `info`, `warning`, `error` |' in docs
    assert '| `log.format` | `"text"` | `text`, `json` |' in docs


def test_all_problems_reported_at_once_with_dotted_paths() -> None:
    """Bad values and unknown keys are all listed, each with path and value."""
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "bosh": {"max_wait": -5, "nonsense": 1, "inactivity": "soon"},
                "limits": {"max_body_size": "12 parsecs"},
                "upstream": {"domains": {"x.org": {"port": 0}}},
                "mystery": {},
            }
        )
    problems = info.value.problems
    assert "bosh.max_wait: must be > 0, got -5" in problems
    assert "bosh.nonsense: unknown key" in problems
    assert any(p.startswith("bosh.inactivity: must be a duration") for p in problems)
    assert any(p.startswith("limits.max_body_size: must be a size") for p in problems)
    assert 'upstream.domains."x.org".port: must be a port number 1-65535, got 0' in problems
    assert 'upstream.domains."x.org".host: required' in problems
    assert "mystery: unknown section" in problems


def test_units() -> None:
    """Durations and sizes take units."""
    c = parse_config(
        {
            "server": {"graceful_timeout": "1500ms"},
            "limits": {"max_body_size": "64KiB", "max_queue_size": "2MB"},
            "bosh": {"max_wait": "2m", "default_wait": 30},
        }
    )
    assert c.server.graceful_timeout == 1.5
    assert c.limits.max_body_size == 65536
    assert c.limits.max_queue_size == 2_000_000
    assert c.bosh.max_wait == 120


def test_whole_seconds_for_bosh_timers() -> None:
    """BOSH carries whole seconds; '1.5s' for wait is refused."""
    with pytest.raises(ConfigError, match=re.escape("bosh.max_wait: must be a whole number")):
        parse_config({"bosh": {"max_wait": "1.5s"}})


def test_plain_upstream_only_for_loopback() -> None:
    """tls='plain' to a non-loopback server is refused (B-SEC-03, C-TLS-03)."""
    with pytest.raises(ConfigError, match="only allowed for loopback"):
        parse_config({"upstream": {"domains": {"a.org": {"host": "10.1.2.3", "tls": "plain"}}}})
    parse_config({"upstream": {"domains": {"a.org": {"host": "::1", "tls": "plain"}}}})


def test_connect_timeout_below_wait() -> None:
    """Upstream connect timeout must be shorter than max wait (G-UP-02)."""
    with pytest.raises(ConfigError, match=re.escape("upstream.connect_timeout")):
        parse_config(
            {"bosh": {"max_wait": 5, "default_wait": 5}, "upstream": {"connect_timeout": 5}}
        )


def test_config_path_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    """--config beats $BOSHD_CONFIG beats /etc/boshd/boshd.toml."""
    monkeypatch.delenv("BOSHD_CONFIG", raising=False)
    assert config_path(None) == Path("/etc/boshd/boshd.toml")
    monkeypatch.setenv("BOSHD_CONFIG", "/tmp/x.toml")
    assert config_path(None) == Path("/tmp/x.toml")
    assert config_path("/a/b.toml") == Path("/a/b.toml")


def test_missing_and_broken_files(tmp_path: Path) -> None:
    """A missing file or invalid TOML is a ConfigError naming the file."""
    with pytest.raises(ConfigError, match="file not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[bosh\nmax_wait = ")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_empty_secret_files_are_refused(tmp_path: Path) -> None:
    """An empty token or secret file is a configuration error, never 'no secret'."""
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "admin": {"listen": ["127.0.0.1:5281"], "token_file": str(empty)},
                "prebind": {"path": "/prebind", "secret_file": str(empty)},
                "auth": {"mode": "token", "token_secret_file": str(empty)},
            }
        )
    assert sum("is empty" in p for p in info.value.problems) == 3


def test_sids_never_start_with_a_dash() -> None:
    """A sid on a command line (boshd sessions show SID) is never taken for an option."""
    from boshd.runtime.registry import new_sid

    assert all(not new_sid().startswith("-") for _ in range(5000))


@pytest.mark.parametrize("value", [0, -1, 129, 1000, "64", 64.5, True])
def test_ipv6_prefix_length_is_a_prefix_length(value: object) -> None:
    """limits.ipv6_prefix_length must be an integer 1-128; anything else is named with its
    dotted path (issue 13 finding 10)."""
    with pytest.raises(ConfigError, match=re.escape("limits.ipv6_prefix_length: must be")):
        parse_config({"limits": {"ipv6_prefix_length": value}})
    assert parse_config({"limits": {"ipv6_prefix_length": 48}}).limits.ipv6_prefix_length == 48
    assert parse_config({}).limits.ipv6_prefix_length == 64


def test_request_timeout_must_be_finite_and_positive() -> None:
    """server.request_timeout refuses 0, negative, nan, inf and junk, naming the key (issue
    13, finding 3: an unbounded request time is the bug itself)."""
    for value in (0, -1, "-2s", float("nan"), float("inf"), "soon"):
        with pytest.raises(ConfigError) as info:
            parse_config({"server": {"request_timeout": value}})
        assert any(p.startswith("server.request_timeout: ") for p in info.value.problems), value
    assert parse_config({"server": {"request_timeout": "500ms"}}).server.request_timeout == 0.5
