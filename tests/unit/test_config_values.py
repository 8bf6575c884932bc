"""Values TOML allows but no setting can mean (issue 13, finding 8), tested for the whole class:
every numeric key of every section is found from the dataclasses, so a key added later is
covered without editing this file; every secret key is found from the loader's table."""

from __future__ import annotations

import math
import os
import string
import typing
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from boshd.config import (
    _SECRET_KEYS,
    MAX_DURATION,
    MIN_BEARER_SECRET_BYTES,
    MIN_TOKEN_SECRET_BYTES,
    SECTIONS,
    Config,
    Secrets,
    UpstreamTarget,
    load_config,
    parse_config,
)
from boshd.core.errors import ConfigError

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
SECRET_KEYS = [(f"{s}.{k}", s, k, minimum) for s, k, _, minimum in _SECRET_KEYS]


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


# ============================================================================= secrets


def secret_raw(section: str, key: str, value: str, *, file: bool = False) -> dict[str, Any]:
    """Decoded TOML that sets one secret (inline, or `value` as the path of its file)."""
    raw: dict[str, Any] = {section: {f"{key}_file" if file else key: value}}
    if section == "auth":
        raw["auth"]["mode"] = "token"
    return raw


def write(path: Path, data: str, mode: int = 0o600) -> str:
    path.write_text(data, encoding="utf-8")
    os.chmod(path, mode)
    return str(path)


BLANKS = st.text(alphabet=" \t\n\r\x0b\x0c\u00a0\u2003\u3000", min_size=1, max_size=40)


@settings(max_examples=150, deadline=None)
@given(key=st.sampled_from(SECRET_KEYS), blank=BLANKS)
def test_blank_inline_secrets_are_refused(key: tuple[str, str, str, int], blank: str) -> None:
    """A secret made only of whitespace (any Unicode spaces) is refused, naming the key; it
    never means "no secret" (issue 13, finding 8)."""
    dotted, section, name, _ = key
    assert f"{dotted}: is empty or only whitespace" in problems_for(
        secret_raw(section, name, blank)
    )


@settings(max_examples=150, deadline=None)
@given(
    key=st.sampled_from(SECRET_KEYS),
    data=st.data(),
)
def test_short_secrets_are_refused_without_showing_them(
    key: tuple[str, str, str, int], data: st.DataObject
) -> None:
    """A secret shorter than its documented minimum (32 bytes for the HS256 key, RFC 7518
    §3.2; 16 for bearer tokens) is refused, and the message never repeats it (issue 13,
    finding 8)."""
    dotted, section, name, minimum = key
    secret = data.draw(
        st.text(alphabet=string.ascii_letters + string.digits, min_size=8, max_size=minimum - 1)
    )
    problems = problems_for(secret_raw(section, name, secret))
    assert f"{dotted}: must be at least {minimum} bytes, got {len(secret)}" in problems
    assert not any(secret in p for p in problems)


def test_minimums_are_the_documented_ones() -> None:
    """The minimums are 32 bytes for auth.token_secret and 16 for the bearer secrets."""
    assert MIN_TOKEN_SECRET_BYTES == 32
    assert MIN_BEARER_SECRET_BYTES == 16
    assert {k[0]: k[3] for k in SECRET_KEYS} == {
        "auth.token_secret": 32,
        "prebind.secret": 16,
        "admin.token": 16,
    }


@pytest.mark.parametrize(("dotted", "section", "name", "minimum"), SECRET_KEYS)
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("", "is empty or only whitespace"),
        ("\n", "is empty or only whitespace"),
        (" \t \n", "is empty or only whitespace"),
        (" {s}\n", "must not start or end with whitespace"),
        ("{s} \n", "must not start or end with whitespace"),
        ("{s}\n\n", "must not start or end with whitespace"),
        ("{s}\nsecond line\n", "must not contain line breaks or control characters"),
        ("{s}\x00\n", "must not contain line breaks or control characters"),
        ("{s}\r", "must not start or end with whitespace"),
        ("{s}\n\r\n", "must not start or end with whitespace"),
    ],
    ids=[
        "empty",
        "newline",
        "blanks",
        "leading",
        "trailing",
        "two-newlines",
        "two-lines",
        "nul",
        "lone-cr",
        "lf-crlf",
    ],
)
def test_bad_secret_files_are_refused_naming_key_and_file(
    tmp_path: Path, dotted: str, section: str, name: str, minimum: int, content: str, problem: str
) -> None:
    """A secret file that is empty, blank, padded or has more than one final newline is
    refused with the key and the file named (issue 13, finding 8)."""
    secret = "k" * minimum
    path = write(tmp_path / "secret", content.format(s=secret))
    problems = problems_for(secret_raw(section, name, path, file=True))
    assert any(p.startswith(f"{dotted}_file: {path!r} {problem}") for p in problems), problems
    assert not any(secret in p for p in problems)


@pytest.mark.parametrize(("dotted", "section", "name", "minimum"), SECRET_KEYS)
def test_secret_file_loses_exactly_one_final_newline(
    tmp_path: Path, dotted: str, section: str, name: str, minimum: int
) -> None:
    """One final newline (LF or CRLF, as editors write) is dropped; the rest is the secret,
    held in Config.secrets and never shown by repr() (issue 13, finding 5)."""
    secret = "s3cr3t-" + "k" * minimum
    field = {k[0]: k[2] for k in _SECRET_KEYS}[section]
    for content in (secret, secret + "\n", secret + "\r\n"):
        path = write(tmp_path / "secret", content)
        config = parse_config(secret_raw(section, name, path, file=True))
        assert getattr(config.secrets, field) == secret
        assert secret not in repr(config)
    inline = parse_config(secret_raw(section, name, secret))
    assert getattr(inline.secrets, field) == secret


@pytest.mark.parametrize(("dotted", "section", "name", "minimum"), SECRET_KEYS)
def test_secret_files_that_are_not_secrets_are_refused(
    tmp_path: Path, dotted: str, section: str, name: str, minimum: int
) -> None:
    """A missing file, a directory, a FIFO (which must not hang the loader), a huge or
    non-UTF-8 file, and inline plus file at once, are each refused naming the key."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    huge = write(tmp_path / "huge", "k" * 100_000)
    latin = tmp_path / "latin"
    latin.write_bytes(b"\xe9" * (minimum + 1))
    for path, problem in (
        (str(tmp_path / "missing"), f"no such file {str(tmp_path / 'missing')!r}"),
        (str(tmp_path), f"{str(tmp_path)!r} is not a regular file"),
        (str(fifo), f"{str(fifo)!r} is not a regular file"),
        (huge, f"{huge!r} is larger than 65536 bytes"),
        (str(latin), f"{str(latin)!r} is not UTF-8 text"),
    ):
        assert f"{dotted}_file: {problem}" in problems_for(
            secret_raw(section, name, path, file=True)
        )
    good = write(tmp_path / "good", "k" * minimum)
    raw = secret_raw(section, name, "k" * minimum)
    raw[section][f"{name}_file"] = good
    assert f"{dotted}: set {name} or {name}_file, not both" in problems_for(raw)


@pytest.mark.parametrize(("dotted", "section", "name", "minimum"), SECRET_KEYS)
@pytest.mark.parametrize("mode", [0o600, 0o400, 0o640, 0o604, 0o644, 0o660, 0o666])
def test_secret_file_readable_by_others_is_warned_about(
    tmp_path: Path, dotted: str, section: str, name: str, minimum: int, mode: int
) -> None:
    """A secret file with any group or other permission bit loads, with a warning that names
    the key, the file and the mode; 0600 and 0400 give none (issue 13, finding 8)."""
    path = write(tmp_path / "secret", "k" * minimum + "\n", mode)
    config = parse_config(secret_raw(section, name, path, file=True))
    if mode & 0o077:
        assert config.warnings == (
            f"{dotted}_file: {path!r} can be read by other users (mode {mode:04o}); chmod 600 it",
        )
    else:
        assert config.warnings == ()


def test_inline_secret_in_a_readable_config_file_is_warned_about(tmp_path: Path) -> None:
    """An inline secret in a config file other users can read gets the same warning, with
    the advice to use the *_file key (issue 13, finding 8)."""
    path = tmp_path / "boshd.toml"
    path.write_text(
        f'[admin]\ntoken = "{"k" * 20}"\n[upstream.domains."{DOMAIN}"]\nhost = "xmpp.{DOMAIN}"\n',
        encoding="utf-8",
    )
    os.chmod(path, 0o644)
    assert load_config(path).warnings == (
        f"admin.token: {str(path)!r} can be read by other users (mode 0644); chmod 600 it, "
        "or move the secret to admin.token_file",
    )
    os.chmod(path, 0o600)
    assert load_config(path).warnings == ()


def test_every_file_key_is_either_a_secret_or_known() -> None:
    """Each `*_file` key is a secret read into Config.secrets (so SIGHUP rotates it) or one
    of the known others, reloaded their own way: a new file key needs a decision here
    (issue 13, finding 5)."""
    file_keys = {k[0] for k in SECRET_KEYS}
    others = {
        "server.tls_cert_file",  # reloaded by Daemon.reload (load_cert_chain)
        "server.tls_key_file",
        'upstream.domains."x.org".ca_file',  # read for each new upstream connection
    }
    found = {
        f"{prefix}.{f.name}"
        for prefix, cls in [*SECTIONS.items(), (f'upstream.domains."{DOMAIN}"', UpstreamTarget)]
        for f in fields(cls)
        if f.name.endswith("_file")
    }
    assert found == {f"{k}_file" for k in file_keys} | others
    assert {f.name for f in fields(Secrets)} == {k[2] for k in _SECRET_KEYS}


def test_inline_secrets_stay_out_of_the_configs_repr() -> None:
    """auth.token_secret, prebind.secret and admin.token never appear in repr(Config), which
    tracebacks and assertion diffs print (issue 13 finding 8; found by the review)."""
    values = {
        "auth": {"mode": "token", "token_secret": "S" * 40},
        "prebind": {"path": "/prebind", "secret": "P" * 20},
        "admin": {"token": "A" * 20},
    }
    config = parse_config(values)
    text = repr(config)
    for secret in ("S" * 40, "P" * 20, "A" * 20):
        assert secret not in text
