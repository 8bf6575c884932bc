"""Values TOML allows but no setting can mean (issue 13, finding 8), tested for the whole class:
every numeric key of every section is found from the dataclasses, so a key added later is
covered without editing this file."""

from __future__ import annotations

import math
import typing
from dataclasses import fields
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boshd.config import (
    MAX_DURATION,
    SECTIONS,
    Config,
    UpstreamTarget,
    parse_config,
)
from boshd.errors import ConfigError

DOMAIN = "x.org"


def _numeric_keys() -> list[tuple[str, str, type]]:
    """(dotted key, field name, int or float) for every numeric field of every section and of
    an upstream domain table."""
    out = []
    tables: list[tuple[str, type[Any]]] = [*SECTIONS.items()]
    tables.append((f'upstream.domains."{DOMAIN}"', UpstreamTarget))
    for prefix, cls in tables:
        hints = typing.get_type_hints(cls)
        for f in fields(cls):
            if hints[f.name] in (int, float):
                out.append((f"{prefix}.{f.name}", f.name, hints[f.name]))
    return out


NUMERIC_KEYS = _numeric_keys()
FLOAT_KEYS = [k for k in NUMERIC_KEYS if k[2] is float]


def raw_with(dotted: str, name: str, value: Any) -> dict[str, Any]:
    """The decoded TOML that sets one key (a domain key inside a valid domain table)."""
    if dotted.startswith("upstream.domains."):
        return {"upstream": {"domains": {DOMAIN: {"host": "127.0.0.1", name: value}}}}
    section = dotted.split(".")[0]
    return {section: {name: value}}


def problems_for(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.problems


def loaded_value(config: Config, dotted: str, name: str) -> Any:
    if dotted.startswith("upstream.domains."):
        return getattr(config.upstream.domains[DOMAIN], name)
    return getattr(getattr(config, dotted.split(".")[0]), name)


# ======================================================================== numeric keys


def test_the_generated_key_list_covers_the_reported_keys() -> None:
    """The generated list holds every float key the review named, so the class tests below
    really run over them (issue 13, finding 8)."""
    dotted = {k[0] for k in FLOAT_KEYS}
    for key in (
        "server.keepalive_timeout",
        "server.graceful_timeout",
        "limits.session_rate_per_ip",
        "limits.session_traffic_window",
        "upstream.connect_timeout",
        "cors.max_age",
    ):
        assert key in dotted
    assert "bosh.max_wait" in {k[0] for k in NUMERIC_KEYS}
    assert 'upstream.domains."x.org".port' in {k[0] for k in NUMERIC_KEYS}


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize(("dotted", "name", "kind"), NUMERIC_KEYS, ids=[k[0] for k in NUMERIC_KEYS])
def test_every_numeric_key_refuses_non_finite_values(
    dotted: str, name: str, kind: type, value: float
) -> None:
    """nan, inf and -inf are refused for every numeric key with one message naming the key;
    none gets through a range check or crashes an int() (issue 13, finding 8)."""
    assert f"{dotted}: must be a finite number, got {value!r}" in problems_for(
        raw_with(dotted, name, value)
    )


@pytest.mark.parametrize(("dotted", "name", "kind"), NUMERIC_KEYS, ids=[k[0] for k in NUMERIC_KEYS])
def test_every_numeric_key_refuses_booleans_and_negative_values(
    dotted: str, name: str, kind: type
) -> None:
    """true/false (an int in Python) and negative numbers are refused for every numeric key,
    each with a message naming the key (issue 13, finding 8)."""
    for value in (True, False, -1, -0.5):
        problems = problems_for(raw_with(dotted, name, value))
        assert any(p.startswith(f"{dotted}: must be ") for p in problems), (value, problems)


@settings(max_examples=600, deadline=None)
@given(
    key=st.sampled_from(NUMERIC_KEYS),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(min_value=-(2**63), max_value=2**63 - 1),
        st.booleans(),
        st.text(alphabet="0123456789.-+eEinfa smhKMGiB", max_size=12),
    ),
)
def test_any_numeric_input_is_a_finite_value_in_range_or_a_config_error(
    key: tuple[str, str, type], value: Any
) -> None:
    """Whatever TOML value an attacker or a typo puts in a numeric key, the loader either
    gives a finite value of the key's type within its range, or a ConfigError; never another
    exception, never nan or inf in a running config (issue 13, finding 8)."""
    dotted, name, kind = key
    try:
        config = parse_config(raw_with(dotted, name, value))
    except ConfigError:
        return  # listed with the other problems; any other exception fails the test
    loaded = loaded_value(config, dotted, name)
    assert type(loaded) is kind
    assert math.isfinite(loaded)
    assert loaded >= 0
    if kind is float:
        assert loaded <= MAX_DURATION or dotted == "limits.session_rate_per_ip"


def test_bosh_max_wait_inf_is_a_config_error_not_a_crash() -> None:
    """`bosh.max_wait = inf` used to raise OverflowError from int(); it is one problem now,
    reported with the others (issue 13, finding 8)."""
    problems = problems_for({"bosh": {"max_wait": math.inf}, "server": {"bogus": 1}})
    assert problems == [
        "bosh.max_wait: must be a finite number, got inf",
        "server.bogus: unknown key",
    ]


def test_durations_are_bounded_and_units_still_work() -> None:
    """Durations above a year are refused; units and whole-second rules still apply."""
    assert problems_for({"server": {"keepalive_timeout": "9000h"}}) == [
        f"server.keepalive_timeout: must be at most {MAX_DURATION:g} seconds (a year), got '9000h'"
    ]
    assert problems_for({"bosh": {"max_wait": "1.5s"}}) == [
        "bosh.max_wait: must be a whole number of seconds, got '1.5s'"
    ]
    assert problems_for({"limits": {"max_body_size": 1.5}}) == [
        "limits.max_body_size: must be a whole number of bytes, got 1.5"
    ]
    config = parse_config({"server": {"keepalive_timeout": "2m"}, "bosh": {"max_wait": 90.0}})
    assert config.server.keepalive_timeout == 120.0
    assert config.bosh.max_wait == 90
    assert type(config.bosh.max_wait) is int


def test_session_rate_nan_no_longer_means_unlimited() -> None:
    """`limits.session_rate_per_ip = nan` compared false with 0 and switched the rate limit
    off; it is refused, and a finite rate is kept as given (issue 13, finding 8)."""
    assert problems_for({"limits": {"session_rate_per_ip": math.nan}}) == [
        "limits.session_rate_per_ip: must be a finite number, got nan"
    ]
    assert parse_config({"limits": {"session_rate_per_ip": 2}}).limits.session_rate_per_ip == 2.0
