"""Configuration: a TOML file parsed into frozen dataclasses.

Every key is declared once below, with its type, default and a one-line meaning; the loader
reports *all* problems at once, each with its dotted path and the value received
(``bosh.max_wait: must be > 0, got -5``), and unknown keys are errors, never ignored. Only the
CLI exits on a bad config (exit code 78); this module raises :class:`ConfigError`.

Durations accept a number of seconds or a string with a unit (``"500ms"``, ``"30s"``,
``"5m"``, ``"1h"``); sizes accept a number of bytes or a string with a unit (``"512B"``,
``"64KiB"``, ``"1MiB"``, ``"10MB"``). Every numeric value, whatever its unit, passes one check,
:func:`_valid_number`: finite (TOML allows ``nan``, ``inf`` and ``-inf``), whole where the key
needs it, within the key's range.

Beyond single values, the loader refuses what cannot work (issue 16): file keys (parser
:func:`_file`) naming files that are missing or unreadable, a certificate and key that do not
load together, two listeners on one address or two endpoints on one path, and, for a whole
file (``load_config``), a configuration under which no client can reach any server. An unknown
key or section gets a "did you mean" from the declared names; every bad entry of a list is
reported with its index (``server.listen[2]``). Findings that are not errors (a relative file
path) go to ``Config.warnings``.

Secrets (``auth.token_secret``, ``prebind.secret``, ``admin.token``, each inline or in a
``*_file``) are read once per load into :class:`Secrets`; nothing else reads those files, so a
reload (which builds a new :class:`Config`) is the one moment a rotated secret takes effect.
"""

from __future__ import annotations

import difflib
import ipaddress
import math
import os
import re
import ssl
import stat
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from boshd.core.addresses import split_route
from boshd.core.errors import ConfigError
from boshd.core.limits import TrafficLimits
from boshd.core.params import DEFAULT_ALLOWED_CONTENT, BoshLimits

DEFAULT_PATH = Path("/etc/boshd/boshd.toml")
ENV_VAR = "BOSHD_CONFIG"

T = TypeVar("T")


class _Invalid(Exception):
    """Bad values; the loader adds the dotted path. Each problem is (where, message): where is
    "" for the value itself or "[i]" for entry i of a list, so that every bad entry of a list
    is reported, each with its index (``server.listen[2]: ...``)."""

    def __init__(self, message: str = "", *, entries: list[tuple[int, str]] | None = None) -> None:
        super().__init__(message)
        self.problems = [(f"[{i}]", text) for i, text in entries] if entries else [("", message)]


# --------------------------------------------------------------------------- value parsers

_DURATION_SIGNED = re.compile(r"^\s*(-?[0-9]+(?:\.[0-9]+)?)\s*(ms|s|m|h)?\s*$")
_SIZE = re.compile(r"^\s*([0-9]+)\s*(B|KB|KiB|MB|MiB|GB|GiB|k|K|M|G)?\s*$")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}
_SIZE_UNITS = {
    None: 1,
    "B": 1,
    "k": 1024,
    "K": 1024,
    "KiB": 1024,
    "KB": 1000,
    "M": 1024**2,
    "MiB": 1024**2,
    "MB": 1000**2,
    "G": 1024**3,
    "GiB": 1024**3,
    "GB": 1000**3,
}


#: The longest duration any key accepts. Beyond a year a timer is a typo, and a huge finite
#: value would still reach clients as a BOSH attribute or a Max-Age header.
MAX_DURATION = 365 * 24 * 3600.0

# The numeric parsers below only convert (units, strings); they may return nan or inf, which
# TOML allows. _valid_number() then checks every numeric value, whatever its parser.


def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise _Invalid(f"must be a duration like '30s', got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION_SIGNED.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise _Invalid(f"must be a duration like '30s' or '500ms', got {value!r}")
    return seconds


def _whole_seconds(value: Any) -> float:
    """A duration that must be whole seconds (BOSH attributes are); made an int once checked."""
    return _duration(value)


def _size(value: Any) -> float:
    if isinstance(value, bool):
        raise _Invalid(f"must be a size like '64KiB', got {value!r}")
    if isinstance(value, int | float):
        return value
    if isinstance(value, str) and (m := _SIZE.match(value)):
        return int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    raise _Invalid(f"must be a size like '64KiB' or a number of bytes, got {value!r}")


def _int(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"must be an integer, got {value!r}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Invalid(f"must be a number, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class _Numeric:
    """What a numeric parser's keys have in common beyond their range rule."""

    whole: str | None  # None: any finite number; else integers only, named in the message
    high: float | None = None  # largest value, if any
    high_text: str = ""  # how the message names it


_YEAR = f"{MAX_DURATION:g} seconds (a year)"

_NUMERIC: dict[Callable[[Any], Any], _Numeric] = {
    _duration: _Numeric(whole=None, high=MAX_DURATION, high_text=_YEAR),
    _whole_seconds: _Numeric("a whole number of seconds", high=MAX_DURATION, high_text=_YEAR),
    _size: _Numeric(whole="a whole number of bytes"),
    _int: _Numeric(whole="an integer"),
    _number: _Numeric(whole=None),
}

_RULES: dict[str, tuple[Callable[[float], bool], str]] = {
    ">0": (lambda v: v > 0, "must be > 0"),
    ">=0": (lambda v: v >= 0, "must be >= 0"),
    "port": (lambda v: 0 < v <= 65535, "must be a port number 1-65535"),
    "ipv6-prefix": (lambda v: 1 <= v <= 128, "must be an IPv6 prefix length 1-128"),
}


def _valid_number(raw: Any, number: float, rule: str, numeric: _Numeric) -> float:
    """The one check every numeric setting passes (issue 13, finding 8). nan compares false
    with everything, so a bound written as "refuse if v <= 0" lets it through, and int() of nan
    or inf raises; hence finite first, then whole where the key needs it, then the key's range.
    Returns an int for whole keys. Messages show what was written (`raw`)."""
    if not math.isfinite(number):
        raise _Invalid(f"must be a finite number, got {raw!r}")
    if numeric.whole and not float(number).is_integer():
        raise _Invalid(f"must be {numeric.whole}, got {raw!r}")
    accepts, message = _RULES[rule]
    if not accepts(number):
        raise _Invalid(f"{message}, got {raw!r}")
    if numeric.high is not None and number > numeric.high:
        raise _Invalid(f"must be at most {numeric.high_text}, got {raw!r}")
    return int(number) if numeric.whole else float(number)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {value!r}")
    return value


def _entries(
    value: Any,
    check: Callable[[str], str | None],
    identity: Callable[[str], str | None] | None = None,
) -> tuple[str, ...]:
    """A list of strings with every entry checked by `check` (None = fine, else what is
    wrong); every bad entry is reported, not only the first. With `identity`, two good
    entries of one identity (None: may repeat) are a problem too."""
    if not isinstance(value, list):
        raise _Invalid(f"must be a list of strings, got {value!r}")
    bad: list[tuple[int, str]] = []
    first: dict[str, int] = {}
    for i, item in enumerate(value):
        problem = check(item) if isinstance(item, str) else f"must be a string, got {item!r}"
        same = None if problem or identity is None else identity(item)
        if same is not None and same in first:
            problem = f"{item!r} is listed twice (first at [{first[same]}])"
        elif same is not None:
            first[same] = i
        if problem:
            bad.append((i, problem))
    if bad:
        raise _Invalid(entries=bad)
    return tuple(value)


def _str_list(value: Any) -> tuple[str, ...]:
    return _entries(value, lambda item: None)


class _OneOf:
    """Parser of a key that takes one of a few words; docs/configuration.md lists them."""

    def __init__(self, *choices: str) -> None:
        self.choices = choices

    def __call__(self, value: Any) -> str:
        if value not in self.choices:
            raise _Invalid(f"must be one of {', '.join(self.choices)}, got {value!r}")
        return str(value)


#: Longest path of a Unix socket: sun_path holds 108 bytes on Linux, the last one a NUL.
MAX_UNIX_PATH_BYTES = 107


def _listener_problem(item: str) -> str | None:
    if item.startswith("unix:"):
        path = item[len("unix:") :]
        if not path:
            return f"unix listener needs a path, got {item!r}"
        if not path.startswith("/"):
            # Relative to the working directory, which is / under systemd: never intended.
            return f"unix socket path must be absolute ('unix:/run/boshd/boshd.sock'), got {item!r}"
        if len(os.fsencode(path)) > MAX_UNIX_PATH_BYTES:
            return f"unix socket path is longer than {MAX_UNIX_PATH_BYTES} bytes, got {item!r}"
        return None
    host, sep, port = item.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
        return f"each listener must be 'host:port' or 'unix:/path', got {item!r}"
    return None


def _listener_identity(item: str) -> str | None:
    """Two listeners on one address cannot both bind (port 0: each gets a port of its own)."""
    return None if item.endswith(":0") and not item.startswith("unix:") else item


def _listen(value: Any) -> tuple[str, ...]:
    return _entries(value, _listener_problem, _listener_identity)


def _network_problem(item: str) -> str | None:
    if item == "unix":  # a proxy connecting over a Unix socket listener
        return None
    try:
        ipaddress.ip_network(item, strict=False)
    except ValueError:
        return f"must be an IP address or network, got {item!r}"
    return None


def _networks(value: Any) -> tuple[str, ...]:
    return _entries(value, _network_problem)


def _routes(value: Any) -> tuple[str, ...]:
    return _entries(
        value,
        lambda item: (
            None
            if split_route(item) is not None
            else f"each route must look like 'xmpp:host:port', got {item!r}"
        ),
    )


def _file(value: Any) -> str:
    """A file boshd reads ('' = none); after parsing, every such key is checked to name a
    readable regular file (:func:`_check_files`)."""
    return _str(value)


def _path_or_empty(value: Any) -> str:
    text = _str(value)
    if text and not text.startswith("/"):
        raise _Invalid(f"must start with '/', got {value!r}")
    return text


def opt(
    default: Any, doc: str, parse: Callable[[Any], Any], check: str = "", *, secret: bool = False
) -> Any:
    """Declare one config key: default, meaning (for docs/configuration.md), parser, range
    rule (numeric keys only: ">0", ">=0" (the default) or "port"); ``secret`` keeps the value
    out of the config's repr (tracebacks, assertion diffs)."""
    if parse in _NUMERIC:
        check = check or ">=0"
        if check not in _RULES:
            raise TypeError(f"unknown range rule {check!r}")
    elif check:
        raise TypeError("range rules are for numeric keys")
    meta = {"doc": doc, "parse": parse, "check": check}
    if isinstance(default, list | dict):
        raise TypeError("use tuples for defaults")
    return field(default=default, metadata=meta, repr=not secret)


# --------------------------------------------------------------------------- sections


@dataclass(frozen=True, slots=True)
class ServerConfig:
    listen: tuple[str, ...] = opt(
        ("127.0.0.1:5280",), "Listeners: 'host:port' or 'unix:/path/to.sock'.", _listen
    )
    bosh_path: str = opt("/http-bind", "URL path of the BOSH endpoint.", _path_or_empty)
    websocket_path: str = opt(
        "/xmpp-websocket", "URL path of the WebSocket endpoint ('' disables it).", _path_or_empty
    )
    graceful_timeout: float = opt(
        10.0, "On SIGTERM, how long to drain sessions before exiting.", _duration
    )
    keepalive_timeout: float = opt(
        75.0,
        "Close a client connection that has had no request in hand for this long.",
        _duration,
        ">0",
    )
    request_timeout: float = opt(
        30.0,
        "Each request must arrive whole (head and body, whatever its framing) within this "
        "long of its first byte, or the connection is closed. Held answers do not count.",
        _duration,
        ">0",
    )
    fast_bosh: bool = opt(
        True,
        "Serve POST/OPTIONS on bosh_path with boshd's lean HTTP/1.1 code (strict requests "
        "only; anything else on the connection goes to aiohttp). false: aiohttp serves all.",
        _bool,
    )
    trusted_proxies: tuple[str, ...] = opt(
        (),
        "Proxies whose X-Forwarded-For / X-Real-IP and X-Forwarded-Proto / Forwarded "
        "proto= headers are believed ('unix' = clients of the Unix socket listeners); a "
        "request counts as HTTPS only if every proto value says https.",
        _networks,
    )
    tls_cert_file: str = opt(
        "",
        "PEM certificate chain: serve HTTPS/WSS on the TCP listeners (reloaded on SIGHUP).",
        _file,
    )
    tls_key_file: str = opt(
        "", "PEM private key for tls_cert_file (not encrypted: boshd asks no passphrase).", _file
    )
    health_path: str = opt("/healthz", "Liveness endpoint ('' disables).", _path_or_empty)
    ready_path: str = opt(
        "/readyz", "Readiness endpoint, 503 while draining ('' disables).", _path_or_empty
    )
    metrics_path: str = opt(
        "/metrics", "Prometheus metrics endpoint ('' disables).", _path_or_empty
    )


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = opt("info", "Log level.", _OneOf("debug", "info", "warning", "error"))
    format: str = opt("text", "Log line format.", _OneOf("text", "json"))
    payloads: bool = opt(
        False, "Log stanza payloads at DEBUG (they include SASL credentials).", _bool
    )


@dataclass(frozen=True, slots=True)
class BoshConfig:
    max_wait: int = opt(
        60, "Longest a request is held (s); caps the client's 'wait'.", _whole_seconds, ">0"
    )
    default_wait: int = opt(60, "'wait' for clients that send none (s).", _whole_seconds, ">0")
    max_hold: int = opt(1, "Most requests held at once; caps the client's 'hold'.", _int, ">=0")
    inactivity: int = opt(
        30, "Session dropped after this long with no request held (s); 0 = never.", _whole_seconds
    )
    polling_inactivity: int = opt(
        60, "Inactivity limit for polling sessions (hold=0 or wait=0) (s).", _whole_seconds
    )
    polling: int = opt(
        2, "Shortest allowed interval between empty polls (s); 0 = not enforced.", _whole_seconds
    )
    maxpause: int = opt(
        120, "Longest pause a client may request (s); 0 = pause unsupported.", _whole_seconds
    )
    ack: bool = opt(True, "Acknowledge requests when the client asks for acks.", _bool)
    verify_keys: bool = opt(True, "Verify key sequencing (XEP-0124 §15) when used.", _bool)
    max_retransmits: int = opt(
        5, "How often one rid may be resent before policy-violation.", _int, ">0"
    )
    enforce_polling: bool = opt(True, "Terminate clients that poll faster than 'polling'.", _bool)
    allowed_content_types: tuple[str, ...] = opt(
        DEFAULT_ALLOWED_CONTENT,
        "Media types a client may choose with 'content'; others get text/xml.",
        _str_list,
    )


@dataclass(frozen=True, slots=True)
class WebSocketConfig:
    ping_interval: float = opt(
        30.0, "WebSocket ping interval; the session is dropped if no pong follows.", _duration
    )
    see_other_uri: str = opt(
        "", "If set, every <open/> is answered <close see-other-uri='...'/>.", _str
    )


def _origin_problem(item: str) -> str | None:
    if item != "*" and not re.match(r"^https?://[^/\s]+$", item):
        return f"each origin must be 'scheme://host[:port]' or '*', got {item!r}"
    return None


def _origins(value: Any) -> tuple[str, ...]:
    return tuple(i.lower() for i in _entries(value, _origin_problem))


@dataclass(frozen=True, slots=True)
class CorsConfig:
    allowed_origins: tuple[str, ...] = opt(
        ("*",),
        "Origins allowed to use BOSH from a browser and to open WebSockets ('*' = any); "
        "requests from other origins get 403.",
        _origins,
    )
    allow_credentials: bool = opt(
        False,
        "Allow cookies/HTTP auth on BOSH requests (then origins are echoed, never '*').",
        _bool,
    )
    extra_headers: tuple[str, ...] = opt(
        (),
        "Request headers browsers may send besides Content-Type (e.g. Authorization).",
        _str_list,
    )
    max_age: float = opt(3600.0, "How long browsers may cache a preflight answer.", _duration)


@dataclass(frozen=True, slots=True)
class AuthConfig:
    mode: str = opt(
        "off",
        "Check a credential before a session opens: 'off', 'token' (HS256 JWT signed with "
        "token_secret) or 'subrequest' (ask subrequest_url, like nginx auth_request).",
        _OneOf("off", "token", "subrequest"),
    )
    credential: str = opt(
        "bearer",
        "Where clients put it: 'bearer' (Authorization header), 'cookie' or 'query'.",
        _OneOf("bearer", "cookie", "query"),
    )
    cookie_name: str = opt(
        "boshd_token", "Cookie holding the credential (credential = 'cookie').", _str
    )
    query_param: str = opt("token", "Query parameter holding it (credential = 'query').", _str)
    token_secret: str = opt(
        "",
        "Shared HS256 secret for mode = 'token', at least 32 bytes (prefer token_secret_file).",
        _str,
        secret=True,
    )
    token_secret_file: str = opt(
        "", "File holding the shared secret; read at start and on SIGHUP.", _file
    )
    token_audience: str = opt("", "If set, tokens must carry this 'aud'.", _str)
    subrequest_url: str = opt(
        "",
        "URL asked with the client's credential; 2xx allows, 401/403 refuse, anything else "
        "is an error (refused, not cached).",
        _str,
    )
    subrequest_timeout: float = opt(2.0, "Time limit for the sub-request.", _duration, ">0")
    subject_header: str = opt(
        "X-Auth-Subject", "Response header of the sub-request naming the authenticated user.", _str
    )
    cache_ttl: float = opt(
        30.0, "How long a sub-request verdict (2xx, 401, 403) is reused.", _duration
    )
    cache_size: int = opt(10000, "Most verdicts kept.", _int, ">0")
    require_jid_match: bool = opt(
        False,
        "End the session if the JID the client binds does not belong to the token's subject.",
        _bool,
    )


@dataclass(frozen=True, slots=True)
class DiscoveryConfig:
    bosh_url: str = opt(
        "", "Public BOSH URL announced in /.well-known/host-meta ('' = not announced).", _str
    )
    websocket_url: str = opt("", "Public WebSocket URL announced in host-meta.", _str)
    allow_insecure: bool = opt(
        False,
        "Development only: allow http:// and ws:// URLs and serve host-meta over plain HTTP.",
        _bool,
    )


@dataclass(frozen=True, slots=True)
class PrebindConfig:
    path: str = opt(
        "",
        "Prebind endpoint for the application server, e.g. '/prebind' ('' = off).",
        _path_or_empty,
    )
    secret: str = opt(
        "",
        "Shared secret (at least 16 bytes) the application server sends as a Bearer token.",
        _str,
        secret=True,
    )
    secret_file: str = opt("", "File holding that secret; read at start and on SIGHUP.", _file)


@dataclass(frozen=True, slots=True)
class AdminConfig:
    listen: tuple[str, ...] = opt(
        (), "Admin API listeners: loopback 'host:port' or 'unix:/path' ('' = off).", _listen
    )
    token: str = opt(
        "", "Bearer token (at least 16 bytes) the admin API requires.", _str, secret=True
    )
    token_file: str = opt("", "File holding that token; read at start and on SIGHUP.", _file)
    allow_remote: bool = opt(False, "Allow admin listeners on non-loopback addresses.", _bool)


@dataclass(frozen=True, slots=True)
class LimitsConfig:
    max_sessions: int = opt(10000, "Most concurrent sessions (both transports).", _int, ">0")
    max_body_size: int = opt(256 * 1024, "Largest BOSH request body.", _size, ">0")
    max_message_size: int = opt(256 * 1024, "Largest WebSocket message.", _size, ">0")
    max_stanza_size: int = opt(1024 * 1024, "Largest element accepted from upstream.", _size, ">0")
    max_queue_size: int = opt(
        1024 * 1024, "Most upstream data waiting for a BOSH client.", _size, ">0"
    )
    max_upstream_queue: int = opt(
        1024 * 1024,
        "Most client data one session may have waiting for the XMPP server (not yet read by "
        "it, or held until its stream opens); above it the session ends with "
        "policy-violation. At least max_body_size and max_message_size (when not set, it "
        "grows to the larger of them).",
        _size,
        ">0",
    )
    max_upstream_queue_total: int = opt(
        256 * 1024 * 1024,
        "The same for all sessions together; above it the sessions holding the most end "
        "with policy-violation. At least max_upstream_queue (when not set, it grows to it).",
        _size,
        ">0",
    )
    max_sessions_per_ip: int = opt(
        256,
        "Most concurrent sessions from one client address (IPv6: one ipv6_prefix_length network).",
        _int,
        ">0",
    )
    session_rate_per_ip: float = opt(
        10.0, "New sessions per second one address may open, sustained (0 = unlimited).", _number
    )
    session_burst_per_ip: int = opt(
        30, "New sessions one address may open at once before the rate applies.", _int, ">0"
    )
    ipv6_prefix_length: int = opt(
        64,
        "Per-address limits count an IPv6 client by this network prefix (64: one subscriber's "
        "/64; 128: each address). IPv4 clients, also IPv4-mapped, count per address.",
        _int,
        "ipv6-prefix",
    )
    session_traffic_window: float = opt(
        10.0, "The window the session_max_* traffic limits count over.", _duration, ">0"
    )
    session_max_requests: int = opt(
        1000,
        "Requests (BOSH) or messages (WebSocket) per window per session (0 = off).",
        _int,
        ">=0",
    )
    session_max_bytes_in: int = opt(
        10 * 1024 * 1024, "Client payload bytes per window per session (0 = off).", _size
    )
    session_max_bytes_out: int = opt(
        100 * 1024 * 1024, "Bytes to the client per window per session (0 = off).", _size
    )
    max_session_age: float = opt(
        0.0,
        "Sessions older than this are ended after delivering what is pending (0 = off).",
        _duration,
    )
    max_session_age_uri: str = opt(
        "",
        "If set, aged-out sessions get see-other-uri to this URL instead of policy-violation.",
        _str,
    )


@dataclass(frozen=True, slots=True)
class UpstreamTarget:
    host: str = opt("", "Host name or address of the XMPP server.", _str)
    port: int = opt(5222, "TCP port.", _int, "port")
    tls: str = opt(
        "starttls",
        "'starttls' (required), 'direct-tls' (XEP-0368) or 'plain' (loopback only).",
        _OneOf("starttls", "direct-tls", "plain"),
    )
    ca_file: str = opt(
        "", "PEM CA bundle to verify the server's certificate ('' = the system store).", _file
    )


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    connect_timeout: float = opt(
        10.0, "Time to resolve, connect and get the server's features.", _duration, ">0"
    )
    allow_any_domain: bool = opt(
        False, "Serve domains not listed in upstream.domains, found by DNS SRV.", _bool
    )
    allowed_routes: tuple[str, ...] = opt(
        (),
        "'route' values clients may use, e.g. 'xmpp:xmpp.example.org:5222'; others are "
        "refused with host-unknown.",
        _routes,
    )
    route_tls: str = opt(
        "starttls",
        "TLS mode for connections chosen by an allowed 'route'.",
        _OneOf("starttls", "direct-tls"),
    )
    allow_private_addresses: bool = opt(
        False,
        "Let DNS-resolved or routed targets be private, loopback, link-local or reserved "
        "addresses, also IPv6 forms carrying one (NAT64, 6to4) or deprecated ones "
        "(IPv4-compatible, site-local) (configured domains are always trusted).",
        _bool,
    )
    domains: Mapping[str, UpstreamTarget] = field(
        default_factory=dict,
        metadata={"doc": 'XMPP domain -> server table ([upstream.domains."name"]).', "parse": None},
    )


#: Shortest secret accepted, in bytes of UTF-8. RFC 7518 §3.2: an HS256 key must be at least
#: as long as the hash output (256 bits); the prebind secret and admin token, sent as bearer
#: tokens, need at least 128 bits (e.g. ``openssl rand -base64 32`` gives 44 bytes).
MIN_TOKEN_SECRET_BYTES = 32
MIN_BEARER_SECRET_BYTES = 16
MAX_SECRET_FILE_BYTES = 64 * 1024

# (section, inline key, Secrets field, shortest length); the file key is "<inline key>_file".
_SECRET_KEYS = (
    ("auth", "token_secret", "auth_token_secret", MIN_TOKEN_SECRET_BYTES),
    ("prebind", "secret", "prebind_secret", MIN_BEARER_SECRET_BYTES),
    ("admin", "token", "admin_token", MIN_BEARER_SECRET_BYTES),
)


@dataclass(frozen=True, slots=True)
class Secrets:
    """The secrets in force, read once per load from the inline key or its ``*_file``
    (a single trailing newline dropped). The frontends read them only from here, through the
    current Config, so SIGHUP (which replaces the Config) is what rotates them (issue 13,
    finding 5). "" = not configured; never shown in a repr."""

    auth_token_secret: str = field(default="", repr=False)
    prebind_secret: str = field(default="", repr=False)
    admin_token: str = field(default="", repr=False)


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    bosh: BoshConfig = field(default_factory=BoshConfig)
    websocket: WebSocketConfig = field(default_factory=WebSocketConfig)
    cors: CorsConfig = field(default_factory=CorsConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    prebind: PrebindConfig = field(default_factory=PrebindConfig)
    admin: AdminConfig = field(default_factory=AdminConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    upstream: UpstreamConfig = field(default_factory=UpstreamConfig)
    source: str = ""
    secrets: Secrets = field(default_factory=Secrets)
    #: Not errors, but worth the operator's eye (a secret file other users can read); the
    #: CLI prints them, the daemon logs them at start and at each reload.
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def bosh_limits(self) -> BoshLimits:
        b = self.bosh
        return BoshLimits(
            max_wait=b.max_wait,
            default_wait=min(b.default_wait, b.max_wait),
            max_hold=b.max_hold,
            inactivity=b.inactivity,
            polling_inactivity=b.polling_inactivity,
            polling=b.polling,
            maxpause=b.maxpause,
            ack=b.ack,
            verify_keys=b.verify_keys,
            max_retransmits=b.max_retransmits,
            max_queue_bytes=self.limits.max_queue_size,
            allowed_content_types=tuple(t.lower() for t in b.allowed_content_types),
            enforce_polling=b.enforce_polling,
            traffic=self.traffic_limits(),
            max_age=self.limits.max_session_age,
            max_age_uri=self.limits.max_session_age_uri,
        )

    def traffic_limits(self) -> TrafficLimits:
        lim = self.limits
        return TrafficLimits(
            window=lim.session_traffic_window,
            max_requests=lim.session_max_requests,
            max_bytes_in=lim.session_max_bytes_in,
            max_bytes_out=lim.session_max_bytes_out,
        )


SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "log": LogConfig,
    "bosh": BoshConfig,
    "websocket": WebSocketConfig,
    "cors": CorsConfig,
    "auth": AuthConfig,
    "discovery": DiscoveryConfig,
    "prebind": PrebindConfig,
    "admin": AdminConfig,
    "limits": LimitsConfig,
    "upstream": UpstreamConfig,
}


# --------------------------------------------------------------------------- loading


def _keys_by_name() -> dict[str, list[str]]:
    """Every key's name -> its dotted keys (a name can live in several tables), to suggest
    the right table for a key written under the wrong one."""
    tables: list[tuple[str, type[Any]]] = [*SECTIONS.items()]
    tables.append(('upstream.domains."<domain>"', UpstreamTarget))
    out: dict[str, list[str]] = {}
    for prefix, cls in tables:
        for f in fields(cls):
            out.setdefault(f.name, []).append(f"{prefix}.{f.name}")
    return out


_KEYS_BY_NAME = _keys_by_name()


def _did_you_mean(name: str, here: Mapping[str, str]) -> str:
    """The hint for an unknown `name`, like ``" (did you mean server.bosh_path?)"``: the
    closest name of its own table (`here`: name -> dotted key), else the same or a very close
    name in another table (a key under the wrong [section]); "" if nothing is close."""
    low = name.lower()
    close = difflib.get_close_matches(low, list(here), n=1)
    if close:
        return f" (did you mean {here[close[0]]}?)"
    close = difflib.get_close_matches(low, list(_KEYS_BY_NAME), n=1, cutoff=0.8)
    if close:
        return f" (did you mean {' or '.join(_KEYS_BY_NAME[close[0]])}?)"
    return ""


def _build(cls: type[T], raw: Any, path: str, problems: list[str]) -> T:
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be a table, got {raw!r}")
        return cls()
    known = {f.name: f for f in fields(cls)}  # type: ignore[arg-type]
    values: dict[str, Any] = {}
    for key, value in raw.items():
        spec = known.get(key)
        dotted = f"{path}.{key}"
        if spec is None:
            hint = _did_you_mean(key, {name: f"{path}.{name}" for name in known})
            problems.append(f"{dotted}: unknown key{hint}")
            continue
        if key in _NESTED:
            values[key] = _NESTED[key](value, dotted, problems)
            continue
        parse = spec.metadata["parse"]
        try:
            parsed = parse(value)
            numeric = _NUMERIC.get(parse)
            if numeric is not None:
                parsed = _valid_number(value, parsed, spec.metadata["check"], numeric)
        except _Invalid as exc:
            problems.extend(f"{dotted}{where}: {text}" for where, text in exc.problems)
            continue
        values[key] = parsed
    return cls(**values)


def _domains(raw: Any, path: str, problems: list[str]) -> dict[str, UpstreamTarget]:
    if not isinstance(raw, dict):
        problems.append(f"{path}: must be a table of domains, got {raw!r}")
        return {}
    out = {}
    for domain, spec in raw.items():
        dotted = f'{path}."{domain}"'
        target = _build(UpstreamTarget, spec, dotted, problems)
        if not target.host:
            problems.append(f"{dotted}.host: required")
        out[domain.lower()] = target
    return out


_NESTED: dict[str, Callable[[Any, str, list[str]], Any]] = {"domains": _domains}


def _cross_checks(config: Config, problems: list[str], warnings: list[str]) -> None:
    """Rules that involve more than one key."""
    for domain, target in config.upstream.domains.items():
        if target.tls == "plain" and not _is_loopback(target.host):
            problems.append(
                f"upstream.domains.\"{domain}\".tls: 'plain' is only allowed for loopback "
                f"servers, got host {target.host!r}"
            )
    if config.bosh.default_wait > config.bosh.max_wait:
        problems.append(
            f"bosh.default_wait: must be <= bosh.max_wait ({config.bosh.max_wait}), "
            f"got {config.bosh.default_wait}"
        )
    if config.upstream.connect_timeout >= config.bosh.max_wait:
        problems.append(
            "upstream.connect_timeout: must be shorter than bosh.max_wait so a creation "
            f"request can report remote-connection-failed (G-UP-02), got "
            f"{config.upstream.connect_timeout}"
        )
    lim = config.limits
    largest = max(lim.max_body_size, lim.max_message_size)
    if lim.max_upstream_queue < largest:
        # Issue 13: one request or message that fits its limit must fit the queue too.
        problems.append(
            "limits.max_upstream_queue: must be >= limits.max_body_size and "
            f"limits.max_message_size ({largest}), got {lim.max_upstream_queue}"
        )
    if lim.max_upstream_queue_total < lim.max_upstream_queue:
        problems.append(
            "limits.max_upstream_queue_total: must be >= limits.max_upstream_queue "
            f"({lim.max_upstream_queue}), got {lim.max_upstream_queue_total}"
        )
    if not config.server.bosh_path and not config.server.websocket_path:
        problems.append("server.bosh_path: both endpoints are disabled")
    _distinct_listeners(config, problems)
    _distinct_paths(config, problems)
    if config.cors.allow_credentials and "*" in config.cors.allowed_origins:
        problems.append(
            "cors.allow_credentials: needs an explicit list in cors.allowed_origins, not '*' "
            "(G-CORS-03)"
        )
    for key, uri in (
        ("websocket.see_other_uri", config.websocket.see_other_uri),
        ("limits.max_session_age_uri", config.limits.max_session_age_uri),
    ):
        if uri and not uri.startswith(("https://", "wss://")):
            # W-SOU-02: clients refuse downgrades; never redirect to plain http:// or ws://.
            problems.append(f"{key}: must be an https:// or wss:// URL, got {uri!r}")
    d = config.discovery
    for key, url, secure, insecure in (
        ("bosh_url", d.bosh_url, "https://", "http://"),
        ("websocket_url", d.websocket_url, "wss://", "ws://"),
    ):
        if not url or url.startswith(secure) or (d.allow_insecure and url.startswith(insecure)):
            continue
        # D-02, A-26: only TLS URLs may be published (unless explicitly developing).
        problem = f"discovery.{key}: must start with {secure}, got {url!r}"
        if url.startswith(insecure):
            problem += f"; {insecure} is for development only, with discovery.allow_insecure = true"
        problems.append(problem)
    p = config.prebind
    if p.path and not (p.secret or p.secret_file):
        problems.append("prebind.secret: the prebind endpoint needs secret or secret_file")
    a = config.admin
    if a.listen and not (a.token or a.token_file):
        problems.append("admin.token: the admin API needs token or token_file")
    for i, item in enumerate(a.listen):
        host = item.rpartition(":")[0].strip("[]")
        if not item.startswith("unix:") and not a.allow_remote and not _is_loopback(host):
            problems.append(
                f"admin.listen[{i}]: {item!r} is not loopback; set admin.allow_remote to allow it"
            )
    auth = config.auth
    if auth.mode == "token" and not (auth.token_secret or auth.token_secret_file):
        problems.append("auth.token_secret: mode 'token' needs token_secret or token_secret_file")
    if auth.mode == "subrequest" and not auth.subrequest_url.startswith(("http://", "https://")):
        problems.append(
            "auth.subrequest_url: mode 'subrequest' needs an http(s) URL, "
            f"got {auth.subrequest_url!r}"
        )
    if auth.require_jid_match and auth.mode == "off":
        problems.append("auth.require_jid_match: needs auth.mode 'token' or 'subrequest'")
    if bool(config.server.tls_cert_file) != bool(config.server.tls_key_file):
        problems.append("server.tls_key_file: tls_cert_file and tls_key_file go together")
    readable = _check_files(config, problems, warnings)
    _check_tls_pair(config.server, readable, problems)
    _check_ca_files(config.upstream, readable, problems, warnings)


def _distinct_listeners(config: Config, problems: list[str]) -> None:
    """An admin listener on an address of the main ones: one cannot bind, and boshd would stop
    at start (repeats within one list are found by its parser)."""
    if any(p.startswith(("server.listen", "admin.listen")) for p in problems):
        return  # a list that did not parse holds its default: no clash to report
    main: dict[str, str] = {}
    for i, item in enumerate(config.server.listen):
        same = _listener_identity(item)
        if same is not None:
            main.setdefault(same, f"server.listen[{i}]")
    for i, item in enumerate(config.admin.listen):
        same = _listener_identity(item)
        if same is not None and same in main:
            problems.append(f"admin.listen[{i}]: {item!r} is also {main[same]}")


#: Paths the application always serves (XEP-0156 discovery).
_FIXED_PATHS = {
    "/.well-known/host-meta": "XEP-0156 host-meta",
    "/.well-known/host-meta.json": "XEP-0156 host-meta",
}


def _distinct_paths(config: Config, problems: list[str]) -> None:
    """Each endpoint on a path of its own: a second handler for a path and method is refused
    at start (a traceback) or never reached."""
    taken = dict(_FIXED_PATHS)
    s = config.server
    for key, path in (
        ("server.bosh_path", s.bosh_path),
        ("server.websocket_path", s.websocket_path),
        ("server.health_path", s.health_path),
        ("server.ready_path", s.ready_path),
        ("server.metrics_path", s.metrics_path),
        ("prebind.path", config.prebind.path),
    ):
        if not path:
            continue
        if path in taken:
            problems.append(f"{key}: {path!r} is also {taken[path]}; each needs its own path")
        else:
            taken[path] = key


def _serves_somebody(config: Config, problems: list[str]) -> None:
    """A daemon's whole configuration must let some client reach some server (issue 16)."""
    if not config.upstream.domains and not config.upstream.allow_any_domain:
        # Router.check: a domain not listed is refused unless allow_any_domain, routes too.
        problems.append(
            "upstream.domains: no domain is listed and upstream.allow_any_domain is false, so "
            'every session would be refused; add an [upstream.domains."example.org"] table'
        )


# --------------------------------------------------------------------------- files


def _file_keys(config: Config) -> list[tuple[str, str]]:
    """(dotted key, path) of every file key that is set, found from the declarations (parser
    `_file`), so a file key added later is checked without a change here."""
    out = []
    for section, cls in SECTIONS.items():
        part = getattr(config, section)
        out += [
            (f"{section}.{f.name}", getattr(part, f.name))
            for f in fields(cls)
            if f.metadata["parse"] is _file
        ]
    for domain, target in config.upstream.domains.items():
        out += [
            (f'upstream.domains."{domain}".{f.name}', getattr(target, f.name))
            for f in fields(UpstreamTarget)
            if f.metadata["parse"] is _file
        ]
    return [(key, path) for key, path in out if path]


def _open_regular(key: str, path: str, problems: list[str]) -> tuple[int, os.stat_result] | None:
    """A descriptor open for reading on the regular file `path` and its status, or None with
    the problem noted, naming the key and the file (at run time the error would say only
    "No such file or directory", and only once a client needs the file)."""
    try:
        # O_NONBLOCK: a FIFO named by mistake must not hang the loader; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except FileNotFoundError:
        problems.append(f"{key}: no such file {path!r}")
        return None
    except OSError as exc:
        problems.append(f"{key}: cannot read {path!r}: {exc.strerror}")
        return None
    try:
        st = os.fstat(fd)
    except OSError as exc:
        os.close(fd)
        problems.append(f"{key}: cannot read {path!r}: {exc.strerror}")
        return None
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        problems.append(f"{key}: {path!r} is not a regular file")
        return None
    return fd, st


def _check_files(config: Config, problems: list[str], warnings: list[str]) -> set[str]:
    """Every file key names a regular file this process can read; returns the keys that do.
    Secret files are read (and so checked) by _read_secrets."""
    secret_keys = {f"{section}.{key}_file" for section, key, _, _ in _SECRET_KEYS}
    readable = set()
    for key, path in _file_keys(config):
        if not os.path.isabs(path):
            warnings.append(
                f"{key}: {path!r} is relative to the directory boshd starts in (/ under "
                "systemd); use an absolute path"
            )
        if key in secret_keys:
            continue
        opened = _open_regular(key, path, problems)
        if opened is None:
            continue
        fd, st = opened
        os.close(fd)
        readable.add(key)
        if key == "server.tls_key_file":
            # Debian's ssl-cert group convention (0640) is fine; readable by anyone is not.
            _warn_if_readable(key, path, st.st_mode, 0o007, warnings)
    return readable


class _Encrypted(Exception):
    """The private key asks for a passphrase."""


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal; boshd has nobody to ask.
    raise _Encrypted


def _check_tls_pair(server: ServerConfig, readable: set[str], problems: list[str]) -> None:
    """The certificate and key load together, as the daemon will load them; when they do not,
    say which file is at fault."""
    cert, key = server.tls_cert_file, server.tls_key_file
    if not {"server.tls_cert_file", "server.tls_key_file"} <= readable:
        return
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_verify_locations(cafile=cert)
    except (ssl.SSLError, OSError) as exc:
        problems.append(f"server.tls_cert_file: no PEM certificate in {cert!r}{_reason(exc)}")
        return
    try:
        context.load_cert_chain(cert, key, password=_no_passphrase)
    except _Encrypted:
        problems.append(
            f"server.tls_key_file: {key!r} is encrypted; boshd needs the key without a passphrase"
        )
    except (ssl.SSLError, OSError) as exc:
        if isinstance(exc, ssl.SSLError) and exc.reason == "KEY_VALUES_MISMATCH":
            problems.append(
                f"server.tls_key_file: the key in {key!r} does not match the certificate in "
                f"server.tls_cert_file ({cert!r})"
            )
        else:
            problems.append(
                f"server.tls_key_file: no usable PEM private key in {key!r}{_reason(exc)}"
            )


def _check_ca_files(
    upstream: UpstreamConfig, readable: set[str], problems: list[str], warnings: list[str]
) -> None:
    """Each domain's ca_file is a CA bundle, loaded as each upstream connection loads it."""
    for domain, target in upstream.domains.items():
        key = f'upstream.domains."{domain}".ca_file'
        if target.ca_file and target.tls == "plain":
            warnings.append(f"{key}: not used, as tls = 'plain' verifies no certificate")
        if key in readable:
            try:
                ssl.create_default_context(cafile=target.ca_file)
            except (ssl.SSLError, OSError) as exc:
                problems.append(f"{key}: no PEM CA certificate in {target.ca_file!r}{_reason(exc)}")


def _reason(exc: OSError) -> str:
    """OpenSSL's short reason (``" (NO_START_LINE)"``) or the system's message; "" if none."""
    reason = getattr(exc, "reason", None) or (
        None if isinstance(exc, ssl.SSLError) else exc.strerror
    )
    return f" ({reason})" if reason else ""


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _derive_upstream_queue(config: Config, raw_limits: Any) -> Config:
    """Issue 13: unless set explicitly, limits.max_upstream_queue is at least the largest
    body or message a client may send (raising those must not break a working file), and the
    total at least that; explicit values are checked in _cross_checks instead."""
    given = raw_limits if isinstance(raw_limits, dict) else {}
    lim = config.limits
    per_session = lim.max_upstream_queue
    if "max_upstream_queue" not in given:
        per_session = max(per_session, lim.max_body_size, lim.max_message_size)
    total = lim.max_upstream_queue_total
    if "max_upstream_queue_total" not in given:
        total = max(total, per_session)
    if (per_session, total) == (lim.max_upstream_queue, lim.max_upstream_queue_total):
        return config
    limits = replace(lim, max_upstream_queue=per_session, max_upstream_queue_total=total)
    return replace(config, limits=limits)


# --------------------------------------------------------------------------- secrets


def _secret_problem(secret: str, minimum: int) -> str | None:
    """What is wrong with a secret, without ever repeating it."""
    if not secret.strip():
        # Never "no secret": an empty bearer secret would match nothing at best, and an
        # empty HMAC key would verify tokens anyone can sign.
        return "is empty or only whitespace"
    if secret != secret.strip():
        return "must not start or end with whitespace (only one final newline is dropped)"
    if any(c < " " or c == "\x7f" for c in secret):
        return "must not contain line breaks or control characters"
    size = len(secret.encode())
    if size < minimum:
        return f"must be at least {minimum} bytes, got {size}"
    return None


def _warn_if_readable(
    key: str, path: str, mode: int, mask: int, warnings: list[str], advice: str = ""
) -> None:
    """A warning naming the key and file when `mode` has any of the permission bits in
    `mask` (0o077: group or others; 0o007: others)."""
    if mode & mask:
        who = "other users" if mask & 0o070 else "any user"
        warnings.append(
            f"{key}: {path!r} can be read by {who} (mode {stat.S_IMODE(mode):04o}); "
            f"chmod {'600' if mask & 0o070 else 'o-rwx'} it{advice}"
        )


def _read_secret_file(key: str, path: str, problems: list[str], warnings: list[str]) -> str | None:
    """The secret in `path` with one trailing newline dropped, or None (problem noted)."""
    opened = _open_regular(key, path, problems)
    if opened is None:
        return None
    fd, st = opened
    try:
        data = b""
        while len(data) <= MAX_SECRET_FILE_BYTES:
            chunk = os.read(fd, MAX_SECRET_FILE_BYTES + 1 - len(data))
            if not chunk:
                break
            data += chunk
    except OSError as exc:
        problems.append(f"{key}: cannot read {path!r}: {exc.strerror}")
        return None
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_FILE_BYTES:
        problems.append(f"{key}: {path!r} is larger than {MAX_SECRET_FILE_BYTES} bytes")
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        problems.append(f"{key}: {path!r} is not UTF-8 text")
        return None
    _warn_if_readable(key, path, st.st_mode, 0o077, warnings)
    # Editors and `echo` end files with a newline; anything else is part of the secret.
    return text.removesuffix("\r\n") if text.endswith("\r\n") else text.removesuffix("\n")


def _read_secrets(config: Config, problems: list[str], warnings: list[str]) -> Secrets:
    """Each configured secret, inline or from its file, checked (issue 13, finding 8)."""
    values: dict[str, str] = {}
    for section, key, name, minimum in _SECRET_KEYS:
        part = getattr(config, section)
        inline, path = getattr(part, key), getattr(part, f"{key}_file")
        if inline and path:
            problems.append(f"{section}.{key}: set {key} or {key}_file, not both")
            continue
        if path:
            secret = _read_secret_file(f"{section}.{key}_file", path, problems, warnings)
            label = f"{section}.{key}_file: {path!r}"
        elif inline:
            secret, label = inline, f"{section}.{key}:"
        else:
            continue
        if secret is None:
            continue
        problem = _secret_problem(secret, minimum)
        if problem:
            problems.append(f"{label} {problem}")  # names the key and file, never the secret
            continue
        values[name] = secret
    return Secrets(**values)


# --------------------------------------------------------------------------- entry points


def parse_config(raw: Mapping[str, Any], source: str = "", *, complete: bool = False) -> Config:
    """Build a Config from already-decoded TOML, secrets read from their files; raises
    ConfigError listing every problem.

    `complete`: `raw` is a daemon's whole configuration (what load_config reads), not a
    fragment a test or tool builds around defaults; then a configuration under which no
    client can ever be served (no upstream domain at all) is refused as well."""
    problems: list[str] = []
    warnings: list[str] = []
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        cls = SECTIONS.get(name)
        if cls is None:
            hint = _did_you_mean(name, {section: section for section in SECTIONS})
            kind = "unknown section" if isinstance(value, dict) else "a key outside any [section]"
            problems.append(f"{name}: {kind}{hint}")
            continue
        sections[name] = _build(cls, value, name, problems)
    config = _derive_upstream_queue(Config(**sections, source=source), raw.get("limits"))
    _cross_checks(config, problems, warnings)
    if complete:
        _serves_somebody(config, problems)
    secrets = _read_secrets(config, problems, warnings)
    if problems:
        raise ConfigError(problems)
    return replace(config, secrets=secrets, warnings=tuple(warnings))


def load_config(path: str | os.PathLike[str]) -> Config:
    try:
        with open(path, "rb") as fh:
            mode = os.fstat(fh.fileno()).st_mode
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: {exc.strerror}"]) from None
    config = parse_config(raw, source=str(path), complete=True)
    warnings = list(config.warnings)
    for section, key, _name, _ in _SECRET_KEYS:
        if getattr(getattr(config, section), key):  # an inline secret in a readable file
            advice = f", or move the secret to {section}.{key}_file"
            _warn_if_readable(f"{section}.{key}", str(path), mode, 0o077, warnings, advice)
    return replace(config, warnings=tuple(warnings))


def changed_secrets(old: Config, new: Config) -> list[str]:
    """The keys (``admin.token_file``, or ``admin.token`` if inline) whose secret differs
    between two loads: for a log line, never the value."""
    out = []
    for section, key, name, _ in _SECRET_KEYS:
        if getattr(old.secrets, name) != getattr(new.secrets, name):
            from_file = getattr(getattr(new, section), f"{key}_file")
            out.append(f"{section}.{key}{'_file' if from_file else ''}")
    return out


def config_path(cli_value: str | None) -> Path:
    """--config beats BOSHD_CONFIG beats /etc/boshd/boshd.toml."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


class KeyDoc(NamedTuple):
    """One key as docs/configuration.md shows it."""

    key: str  # dotted
    default: str  # as written in TOML
    meaning: str
    accepts: str  # the values allowed


def describe_keys() -> list[KeyDoc]:
    """Every key; docs/configuration.md is checked against it."""
    tables: list[tuple[str, type[Any]]] = [*SECTIONS.items()]
    tables.append(('upstream.domains."<domain>"', UpstreamTarget))
    out = []
    for prefix, cls in tables:
        for f in fields(cls):
            if f.name in _NESTED:
                continue  # documented by its own table
            parse, check = f.metadata["parse"], f.metadata["check"]
            default = _render(f.default, parse)
            out.append(
                KeyDoc(f"{prefix}.{f.name}", default, f.metadata["doc"], _accepts(parse, check))
            )
    return out


#: What each parser accepts, as docs/configuration.md says it (numeric ones add their range);
#: a parser missing here fails the docs test, so a new one gets a description.
_ACCEPTS: dict[Callable[[Any], Any], str] = {
    _duration: "duration",
    _whole_seconds: "whole seconds",
    _size: "size",
    _int: "integer",
    _number: "number",
    _bool: "`true`, `false`",
    _str: "string",
    _file: 'path of a readable file, or `""`',
    _path_or_empty: 'URL path starting with `/`, or `""`',
    _listen: "list of `host:port`, `unix:/absolute/path`",
    _networks: "list of IP addresses or networks, `unix`",
    _routes: "list of `xmpp:host:port`",
    _origins: "list of `scheme://host[:port]`, `*`",
    _str_list: "list of strings",
}
_RANGE_TEXT = {">0": "> 0", ">=0": ">= 0", "port": "1-65535", "ipv6-prefix": "1-128"}


def _accepts(parse: Callable[[Any], Any], check: str) -> str:
    if isinstance(parse, _OneOf):
        return ", ".join(f"`{choice}`" for choice in parse.choices)
    text = _ACCEPTS[parse]
    numeric = _NUMERIC.get(parse)
    if numeric is not None:
        text += f" {_RANGE_TEXT[check]}"
        if numeric.high is not None:
            text += ", at most a year"
    return text


def _render(value: Any, parse: Any = None) -> str:
    """A default as it would be written in the TOML file."""
    if parse in (_duration, _whole_seconds):
        return f'"{value:g}s"'
    if parse is _size:
        for unit, factor in (("MiB", 1024**2), ("KiB", 1024)):
            if value and value % factor == 0:
                return f'"{value // factor}{unit}"'
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple):
        return "[" + ", ".join(f'"{v}"' for v in value) + "]"
    if isinstance(value, str):
        return f'"{value}"'
    return str(value)
