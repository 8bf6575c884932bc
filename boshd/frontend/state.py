"""What the aiohttp handlers share: config, registry, metrics, schema (one per app)."""

from __future__ import annotations

import hmac
import ipaddress
from dataclasses import dataclass

from aiohttp import web

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


def is_secure(request: web.Request, config: Config) -> bool:
    """Did the client use TLS? Directly, or (from a trusted proxy) per X-Forwarded-Proto."""
    if request.secure:
        return True
    peer = request.remote or ""
    if config.server.trusted_proxies and _trusted(peer, config.server.trusted_proxies):
        return request.headers.get("X-Forwarded-Proto", "").lower() == "https"
    return False


def _trusted(address: str, networks: tuple[str, ...]) -> bool:
    if address in ("", "unix"):
        return "unix" in networks
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in ipaddress.ip_network(net, strict=False) for net in networks)
