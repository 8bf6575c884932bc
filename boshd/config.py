"""Configuration: a TOML file parsed into frozen dataclasses.

Every key is declared once below, with its type, default and a one-line meaning; the loader
reports *all* problems at once, each with its dotted path and the value received
(``bosh.max_wait: must be > 0, got -5``), and unknown keys are errors, never ignored. Only the
CLI exits on a bad config (exit code 78); this module raises :class:`ConfigError`.

Durations accept a number of seconds or a string with a unit (``"500ms"``, ``"30s"``,
``"5m"``, ``"1h"``); sizes accept a number of bytes or a string with a unit (``"512B"``,
``"64KiB"``, ``"1MiB"``, ``"10MB"``).
"""

from __future__ import annotations

import ipaddress
import os
import re
import ssl
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, TypeVar

from boshd.core.limits import TrafficLimits
from boshd.core.params import DEFAULT_ALLOWED_CONTENT, BoshLimits
from boshd.errors import ConfigError

DEFAULT_PATH = Path("/etc/boshd/boshd.toml")
ENV_VAR = "BOSHD_CONFIG"

T = TypeVar("T")


class _Invalid(Exception):
    """One bad value; the loader adds the dotted path."""


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


def _size(value: Any) -> int:
    if isinstance(value, bool):
        raise _Invalid(f"must be a size like '64KiB', got {value!r}")
    if isinstance(value, int):
        size = value
    elif isinstance(value, str) and (m := _SIZE.match(value)):
        size = int(m.group(1)) * _SIZE_UNITS[m.group(2)]
    else:
        raise _Invalid(f"must be a size like '64KiB' or a number of bytes, got {value!r}")
    if size < 0:
        raise _Invalid(f"must be >= 0, got {value!r}")
    return size


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _Invalid(f"must be an integer, got {value!r}")
    return value


def _number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise _Invalid(f"must be a number >= 0, got {value!r}")
    return float(value)


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise _Invalid(f"must be true or false, got {value!r}")
    return value


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise _Invalid(f"must be a string, got {value!r}")
    return value


def _str_list(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _Invalid(f"must be a list of strings, got {value!r}")
    return tuple(value)


def _one_of(*choices: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        if value not in choices:
            raise _Invalid(f"must be one of {', '.join(choices)}, got {value!r}")
        return str(value)

    return parse


def _whole_seconds(value: Any) -> int:
    seconds = _duration(value)
    if seconds != int(seconds):  # BOSH attributes are whole seconds
        raise _Invalid(f"must be a whole number of seconds, got {value!r}")
    return int(seconds)


def _listen(value: Any) -> tuple[str, ...]:
    items = _str_list(value)
    for item in items:
        if item.startswith("unix:"):
            if len(item) == len("unix:"):
                raise _Invalid(f"unix listener needs a path, got {item!r}")
            continue
        host, sep, port = item.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535 or not host:
            raise _Invalid(f"each listener must be 'host:port' or 'unix:/path', got {item!r}")
    return items


def _networks(value: Any) -> tuple[str, ...]:
    items = _str_list(value)
    for item in items:
        if item == "unix":  # a proxy connecting over a Unix socket listener
            continue
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise _Invalid(f"must be IP addresses or networks, got {item!r}") from None
    return items


def split_route(route: str) -> tuple[str, int] | None:
    """``proto:host:port`` (XEP-0124 §7.1): not a URI; split on the last colon (B-SREQ-06)."""
    proto, sep, rest = route.partition(":")
    host, sep2, port = rest.rpartition(":")
    if not sep or not sep2 or proto != "xmpp" or not host or not port.isdigit():
        return None
    number = int(port)
    if not 0 < number <= 65535:
        return None
    return host.strip("[]").lower(), number


def _routes(value: Any) -> tuple[str, ...]:
    items = _str_list(value)
    for item in items:
        if split_route(item) is None:
            raise _Invalid(f"each route must look like 'xmpp:host:port', got {item!r}")
    return items


def _path_or_empty(value: Any) -> str:
    text = _str(value)
    if text and not text.startswith("/"):
        raise _Invalid(f"must start with '/', got {value!r}")
    return text


def opt(default: Any, doc: str, parse: Callable[[Any], Any], check: str = "") -> Any:
    """Declare one config key: default, meaning (for docs/configuration.md), parser, rule."""
    if not check and parse in (_duration, _whole_seconds, _size):
        check = ">=0"
    meta = {"doc": doc, "parse": parse, "check": check}
    if isinstance(default, list | dict):
        raise TypeError("use tuples for defaults")
    return field(default=default, metadata=meta)


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
    fast_bosh: bool = opt(
        True,
        "Serve POST/OPTIONS on bosh_path with boshd's lean HTTP/1.1 code (strict requests "
        "only; anything else on the connection goes to aiohttp). false: aiohttp serves all.",
        _bool,
    )
    trusted_proxies: tuple[str, ...] = opt(
        (),
        "Proxies whose X-Forwarded-For / X-Real-IP headers are believed ('unix' = clients "
        "of the Unix socket listeners).",
        _networks,
    )
    tls_cert_file: str = opt(
        "",
        "PEM certificate chain: serve HTTPS/WSS on the TCP listeners (reloaded on SIGHUP).",
        _str,
    )
    tls_key_file: str = opt("", "PEM private key for tls_cert_file.", _str)
    health_path: str = opt("/healthz", "Liveness endpoint ('' disables).", _path_or_empty)
    ready_path: str = opt(
        "/readyz", "Readiness endpoint, 503 while draining ('' disables).", _path_or_empty
    )
    metrics_path: str = opt(
        "/metrics", "Prometheus metrics endpoint ('' disables).", _path_or_empty
    )


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = opt("info", "Log level.", _one_of("debug", "info", "warning", "error"))
    format: str = opt("text", "Log line format.", _one_of("text", "json"))
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


def _origins(value: Any) -> tuple[str, ...]:
    items = _str_list(value)
    for item in items:
        if item != "*" and not re.match(r"^https?://[^/\s]+$", item):
            raise _Invalid(f"each origin must be 'scheme://host[:port]' or '*', got {item!r}")
    return tuple(i.lower() for i in items)


@dataclass(frozen=True, slots=True)
class CorsConfig:
    allowed_origins: tuple[str, ...] = opt(
        ("*",),
        "Origins allowed to use BOSH from a browser and to open WebSockets ('*' = any).",
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
        _one_of("off", "token", "subrequest"),
    )
    credential: str = opt(
        "bearer",
        "Where clients put it: 'bearer' (Authorization header), 'cookie' or 'query'.",
        _one_of("bearer", "cookie", "query"),
    )
    cookie_name: str = opt(
        "boshd_token", "Cookie holding the credential (credential = 'cookie').", _str
    )
    query_param: str = opt("token", "Query parameter holding it (credential = 'query').", _str)
    token_secret: str = opt(
        "", "Shared HS256 secret for mode = 'token' (prefer token_secret_file).", _str
    )
    token_secret_file: str = opt(
        "", "File holding the shared secret (read at start and reload).", _str
    )
    token_audience: str = opt("", "If set, tokens must carry this 'aud'.", _str)
    subrequest_url: str = opt("", "URL asked with the client's credential; 2xx allows.", _str)
    subrequest_timeout: float = opt(2.0, "Time limit for the sub-request.", _duration, ">0")
    subject_header: str = opt(
        "X-Auth-Subject", "Response header of the sub-request naming the authenticated user.", _str
    )
    cache_ttl: float = opt(30.0, "How long a sub-request verdict is reused.", _duration)
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
    secret: str = opt("", "Shared secret the application server sends as a Bearer token.", _str)
    secret_file: str = opt("", "File holding that secret.", _str)


@dataclass(frozen=True, slots=True)
class AdminConfig:
    listen: tuple[str, ...] = opt(
        (), "Admin API listeners: loopback 'host:port' or 'unix:/path' ('' = off).", _listen
    )
    token: str = opt("", "Bearer token the admin API requires.", _str)
    token_file: str = opt("", "File holding that token.", _str)
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
        256, "Most concurrent sessions from one client address.", _int, ">0"
    )
    session_rate_per_ip: float = opt(
        10.0, "New sessions per second one address may open, sustained (0 = unlimited).", _number
    )
    session_burst_per_ip: int = opt(
        30, "New sessions one address may open at once before the rate applies.", _int, ">0"
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
        _one_of("starttls", "direct-tls", "plain"),
    )
    ca_file: str = opt("", "CA bundle to verify the server (default: system store).", _str)


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
        _one_of("starttls", "direct-tls"),
    )
    allow_private_addresses: bool = opt(
        False,
        "Let DNS-resolved or routed targets be private, loopback or link-local addresses "
        "(configured domains are always trusted).",
        _bool,
    )
    domains: Mapping[str, UpstreamTarget] = field(
        default_factory=dict,
        metadata={"doc": 'XMPP domain -> server table ([upstream.domains."name"]).', "parse": None},
    )


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


def _check(rule: str, value: Any) -> str | None:
    if rule == ">0" and value <= 0:
        return f"must be > 0, got {value!r}"
    if rule == ">=0" and value < 0:
        return f"must be >= 0, got {value!r}"
    if rule == "port" and not 0 < value <= 65535:
        return f"must be a port number 1-65535, got {value!r}"
    return None


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
            problems.append(f"{dotted}: unknown key")
            continue
        if key in _NESTED:
            values[key] = _NESTED[key](value, dotted, problems)
            continue
        try:
            parsed = spec.metadata["parse"](value)
        except _Invalid as exc:
            problems.append(f"{dotted}: {exc}")
            continue
        message = _check(spec.metadata.get("check", ""), parsed)
        if message:
            problems.append(f"{dotted}: {message}")
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


def _cross_checks(config: Config, problems: list[str]) -> None:
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
    for key, url, schemes in (
        ("bosh_url", d.bosh_url, ("https://",)),
        ("websocket_url", d.websocket_url, ("wss://",)),
    ):
        insecure = ("http://",) if key == "bosh_url" else ("ws://",)
        if url and not url.startswith(schemes + (insecure if d.allow_insecure else ())):
            # D-02, A-26: only TLS URLs may be published (unless explicitly developing).
            problems.append(f"discovery.{key}: must start with {schemes[0]}, got {url!r}")
    p = config.prebind
    if p.path and not (p.secret or p.secret_file):
        problems.append("prebind.secret: the prebind endpoint needs secret or secret_file")
    for key, path in (
        ("prebind.secret_file", p.secret_file),
        ("admin.token_file", config.admin.token_file),
        ("auth.token_secret_file", config.auth.token_secret_file),
    ):
        if path and not os.path.isfile(path):
            problems.append(f"{key}: no such file {path!r}")
        elif path and not secret_value("", path):
            # An empty secret must never mean "no secret" (it would open the endpoint).
            problems.append(f"{key}: the file {path!r} is empty")
    a = config.admin
    if a.listen and not (a.token or a.token_file):
        problems.append("admin.token: the admin API needs token or token_file")
    for item in a.listen:
        host = item.rpartition(":")[0].strip("[]")
        if not item.startswith("unix:") and not a.allow_remote and not _is_loopback(host):
            problems.append(
                f"admin.listen: {item!r} is not loopback; set admin.allow_remote to allow it"
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
    missing = False
    for key in ("tls_cert_file", "tls_key_file"):
        path = getattr(config.server, key)
        if path and not os.path.isfile(path):
            problems.append(f"server.{key}: no such file {path!r}")
            missing = True
    if config.server.tls_cert_file and config.server.tls_key_file and not missing:
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(
                config.server.tls_cert_file, config.server.tls_key_file
            )
        except (ssl.SSLError, OSError) as exc:
            problems.append(f"server.tls_cert_file: cannot load the certificate and key: {exc}")


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


def parse_config(raw: Mapping[str, Any], source: str = "") -> Config:
    """Build a Config from already-decoded TOML; raises ConfigError listing every problem."""
    problems: list[str] = []
    sections: dict[str, Any] = {}
    for name, value in raw.items():
        cls = SECTIONS.get(name)
        if cls is None:
            problems.append(f"{name}: unknown section")
            continue
        sections[name] = _build(cls, value, name, problems)
    config = _derive_upstream_queue(Config(**sections, source=source), raw.get("limits"))
    _cross_checks(config, problems)
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | os.PathLike[str]) -> Config:
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"{path}: file not found"]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: {exc.strerror}"]) from None
    return parse_config(raw, source=str(path))


def secret_value(inline: str, path: str) -> str:
    """A secret given inline or in a file (the file wins; surrounding whitespace dropped)."""
    if path:
        try:
            return Path(path).read_text().strip()
        except OSError:
            return ""
    return inline.strip()


def config_path(cli_value: str | None) -> Path:
    """--config beats BOSHD_CONFIG beats /etc/boshd/boshd.toml."""
    if cli_value:
        return Path(cli_value)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else DEFAULT_PATH


def describe_keys() -> list[tuple[str, str, str]]:
    """(dotted key, default, meaning) for every key; docs/configuration.md is checked against it."""
    out = []
    for section, cls in SECTIONS.items():
        for f in fields(cls):
            if f.name in _NESTED:
                continue  # documented by its own table
            default = _render(f.default, f.metadata["parse"])
            out.append((f"{section}.{f.name}", default, f.metadata["doc"]))
    for f in fields(UpstreamTarget):
        out.append(
            (
                f'upstream.domains."<domain>".{f.name}',
                _render(f.default, f.metadata["parse"]),
                f.metadata["doc"],
            )
        )
    return out


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
