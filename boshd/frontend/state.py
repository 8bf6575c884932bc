"""What the aiohttp handlers share: config, registry, metrics, schema (one per app)."""

from __future__ import annotations

import hmac
import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from aiohttp import web
from multidict import MultiMapping

from boshd.config import Config
from boshd.frontend.auth import Authenticator
from boshd.frontend.view import RequestView
from boshd.metrics import Metrics
from boshd.runtime.registry import Registry
from boshd.wire.schema import BodySchema


@dataclass
class AppState:
    config: Config
    registry: Registry
    metrics: Metrics
    schema: BodySchema
    auth: Authenticator


APP_STATE: web.AppKey[AppState] = web.AppKey("boshd_state", AppState)


def client_ip(request: RequestView, config: Config) -> str:
    """The client's address; proxy headers only count from ``server.trusted_proxies``."""
    peer = request.remote or "unix"  # no address: a Unix socket listener
    if not config.server.trusted_proxies or not _trusted(peer, config.server.trusted_proxies):
        return peer
    real = request.headers.get("X-Real-IP")
    if real:
        return real.strip()
    forwarded = request.headers.get("X-Forwarded-For")
    if forwarded:
        # The right-most address not added by one of our proxies is the client.
        for hop in reversed([h.strip() for h in forwarded.split(",") if h.strip()]):
            if not _trusted(hop, config.server.trusted_proxies):
                return hop
    return peer


def bearer_matches(request: web.Request, expected: str) -> bool:
    """``Authorization: Bearer <expected>``, compared in constant time; an empty expected
    secret (say, a token file truncated during rotation) matches nothing."""
    if not expected:
        return False
    scheme, _, supplied = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(supplied.strip().encode(), expected.encode())


def is_secure(request: RequestView, config: Config) -> bool:
    """Did the client use TLS? Directly, or, from a peer in ``server.trusted_proxies``, as that
    proxy says (``X-Forwarded-Proto``, or RFC 7239 ``Forwarded: proto=``). The one answer to
    this question, on both BOSH fronts, for WebSocket, prebind and discovery: a session
    created over TLS is only continued over TLS (XEP-0124 §19.1, B-HTTP-14, B-SEC-02)."""
    if request.secure:
        return True
    peer = request.remote or ""
    if not config.server.trusted_proxies or not _trusted(peer, config.server.trusted_proxies):
        return False  # a client's own forwarding headers mean nothing
    return proxied_secure(request.headers)


_SECURE_SCHEMES = frozenset(("https", "wss"))
_TCHARS = r"-!#$%&'*+.^_`|~0-9A-Za-z"
# RFC 7239 §4: forwarded-pair = token "=" value; value = token / quoted-string. Bracketed
# IPv6 and ':' are taken unquoted too, as some proxies write them.
_FORWARDED_PAIR = re.compile(
    rf'[ \t]*([{_TCHARS}]+)[ \t]*=[ \t]*("(?:[^"\\]|\\.)*"|[{_TCHARS}:\[\]]*)[ \t]*([;,]|$)'
)


def proxied_secure(headers: Mapping[str, str]) -> bool:
    """What a trusted proxy says about the client's scheme. Every value must be https: each
    ``X-Forwarded-Proto`` item and the ``proto`` of each ``Forwarded`` element, over every
    line of either header. A client may send its own ``https`` ahead of what the proxy
    appends, so one other value (or an element without ``proto``, or a value that does not
    parse) makes the request plain; no value at all is plain too."""
    protos: list[str] = []
    for line in _all(headers, "X-Forwarded-Proto"):
        protos.extend(item.strip().lower() for item in line.split(","))
    for line in _all(headers, "Forwarded"):
        elements = _forwarded_protos(line)
        if elements is None:
            return False
        protos.extend(elements)
    return bool(protos) and all(proto in _SECURE_SCHEMES for proto in protos)


def _all(headers: Mapping[str, str], name: str) -> list[str]:
    if isinstance(headers, MultiMapping):
        return list(headers.getall(name, []))
    value = headers.get(name)
    return [] if value is None else [value]


def _forwarded_protos(value: str) -> list[str] | None:
    """The ``proto`` of each element of one ``Forwarded`` line ("" where an element has
    none), or None if the line does not parse."""
    protos: list[str] = []
    proto = ""
    pos = 0
    separator = ","
    while pos < len(value):
        match = _FORWARDED_PAIR.match(value, pos)
        if match is None:
            return None
        name, raw, separator = match.groups()
        if name.lower() == "proto":
            proto = re.sub(r"\\(.)", r"\1", raw[1:-1]) if raw.startswith('"') else raw
            proto = proto.strip().lower()
        if separator != ";":
            protos.append(proto)
            proto = ""
        pos = match.end()
    if separator == ";":  # "for=x;" ends its element too
        protos.append(proto)
    return protos


def _trusted(address: str, networks: tuple[str, ...]) -> bool:
    if address in ("", "unix"):
        return "unix" in networks
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)
