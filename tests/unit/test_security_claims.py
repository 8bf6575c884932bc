"""The pure promises of docs/security.md: configuration rules an operator cannot get around,
defaults, the sid generator and the subject rule of [auth] (issue 13). The promises that need
the running app are in tests/protocol/test_security_claims.py."""

from __future__ import annotations

import base64
import re

import pytest

from boshd.config import LimitsConfig, parse_config
from boshd.core.errors import ConfigError
from boshd.core.stream import subject_matches
from boshd.runtime.registry import new_sid

MiB = 1024 * 1024


def problems_of(raw: dict[str, object]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw)
    return info.value.problems


def test_traffic_limit_defaults() -> None:
    """Without configuration each session may make 1000 requests (or WebSocket messages),
    send 10 MiB and receive 100 MiB per 10 s window (docs/security.md: Session age and
    traffic limits, "the defaults (1000 requests, 10 MiB in, 100 MiB out per 10 s)")."""
    limits = LimitsConfig()
    assert limits.session_max_requests == 1000
    assert limits.session_max_bytes_in == 10 * MiB
    assert limits.session_max_bytes_out == 100 * MiB
    assert limits.session_traffic_window == 10.0
    traffic = parse_config({}).traffic_limits()
    assert (traffic.max_requests, traffic.max_bytes_in, traffic.max_bytes_out) == (
        1000,
        10 * MiB,
        100 * MiB,
    )
    assert traffic.window == 10.0
    assert parse_config({}).bosh_limits().traffic == traffic  # what BOSH sessions get


@pytest.mark.parametrize("key", ["limits.max_session_age_uri", "websocket.see_other_uri"])
@pytest.mark.parametrize(
    "uri",
    [
        "http://other.example.com/http-bind",
        "ws://other.example.com/xmpp-websocket",
        "HTTP://other.example.com/",
        "//other.example.com/xmpp-websocket",
        "other.example.com",
        "javascript:alert(1)",
        " wss://other.example.com/",
    ],
)
def test_redirect_targets_must_be_https_or_wss(key: str, uri: str) -> None:
    """A see-other-uri target that is not https:// or wss:// is a configuration error naming
    the key, so clients are never redirected to plain text (docs/security.md: Redirect
    downgrade; W-SOU-02)."""
    section, name = key.split(".")
    problems = problems_of({section: {name: uri}})
    assert any(p.startswith(f"{key}: must be an https:// or wss:// URL") for p in problems)


@pytest.mark.parametrize("key", ["limits.max_session_age_uri", "websocket.see_other_uri"])
@pytest.mark.parametrize(
    "uri", ["https://other.example.com/http-bind", "wss://other.example.com/xmpp-websocket"]
)
def test_tls_redirect_targets_are_accepted(key: str, uri: str) -> None:
    """https:// and wss:// redirect targets are accepted (docs/security.md: Redirect
    downgrade; W-SOU-02)."""
    section, name = key.split(".")
    config = parse_config({section: {name: uri}})
    assert getattr(getattr(config, section), name) == uri


@pytest.mark.parametrize("origins", [["*"], ["https://chat.example", "*"]])
def test_cors_credentials_need_an_explicit_origin_list(origins: list[str]) -> None:
    """cors.allow_credentials with '*' among the allowed origins is a configuration error:
    credentials are only ever allowed for listed origins (docs/security.md: Cross-site use
    from browsers, "credentials only with an explicit origin list"; G-CORS-03)."""
    problems = problems_of({"cors": {"allowed_origins": origins, "allow_credentials": True}})
    assert any(p.startswith("cors.allow_credentials:") for p in problems)
    config = parse_config(
        {"cors": {"allowed_origins": ["https://chat.example"], "allow_credentials": True}}
    )
    assert config.cors.allow_credentials


def test_prebind_path_without_a_secret_is_a_configuration_error() -> None:
    """prebind.path without prebind.secret or secret_file does not start prebind without a
    secret: it is a configuration error naming prebind.secret (docs/security.md: Admin and
    prebind endpoints, "prebind is off unless a secret is set")."""
    problems = problems_of({"prebind": {"path": "/prebind"}})
    assert any(p.startswith("prebind.secret:") for p in problems)
    assert parse_config({}).prebind.path == ""  # off by default


def test_sids_carry_192_random_bits() -> None:
    """A sid is 32 URL-safe characters that decode to 24 bytes (192 bits), never repeats, and
    every one of its 192 bits is set in about half of many sids, as uniformly random bits
    are (docs/security.md: Session hijacking, "sids are 192 random bits"; B-SEC-01,
    B-SRESP-01)."""
    count = 2000
    sids = [new_sid() for _ in range(count)]
    assert len(set(sids)) == count
    raw = []
    for sid in sids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{32}", sid), sid
        decoded = base64.urlsafe_b64decode(sid)
        assert len(decoded) == 24
        raw.append(int.from_bytes(decoded, "big"))
    # Each bit is Binomial(2000, 1/2): mean 1000, standard deviation 22.4; 7 deviations.
    for bit in range(192):
        ones = sum((value >> bit) & 1 for value in raw)
        assert 843 <= ones <= 1157, (bit, ones)


@pytest.mark.parametrize(
    ("subject", "jid", "matches"),
    [
        ("alice", "alice@example.org/phone", True),
        ("alice", "alice@any-domain.example/x", True),
        ("alice", "ALICE@example.org/x", True),
        ("alice", "malice@example.org/x", False),
        ("alice", "alice2@example.org/x", False),
        ("alice", "bob@example.org/alice", False),
        ("alice@example.org", "alice@example.org/phone", True),
        ("alice@example.org", "alice@example.org", True),
        ("Alice@Example.org", "alice@example.org/phone", True),
        ("alice@example.org", "alice@evil.example/phone", False),
        ("alice@example.org", "alice@example.org.evil.example/x", False),
        ("alice@example.org", "alice@sub.example.org/x", False),
        ("alice@example.org", "bob@example.org/alice@example.org", False),
    ],
)
def test_subject_matching_rules(subject: str, jid: str, matches: bool) -> None:
    """With auth.require_jid_match, a subject that is a local part matches that user at any
    domain, and a bare-JID subject matches exactly that bare JID, whatever the resource
    (docs/security.md: Authentication, "alice matches alice@any-domain, alice@example.org
    matches that bare JID exactly")."""
    assert subject_matches(subject, jid) is matches
