"""CORS for the BOSH endpoint and the Origin check for WebSocket upgrades.

XEP-0124 says nothing about CORS (A-27); browsers need it. A cross-origin StropheJS page
posts ``Content-Type: text/xml``, which triggers a preflight (G-CORS-01); every response,
errors and terminate bodies included, must carry ``Access-Control-Allow-Origin`` or the
browser hides it (G-CORS-02); with credentials the exact origin is echoed, never ``*``
(G-CORS-03). Only the BOSH endpoint adds these headers (boshd.frontend.bosh, no middleware):
health and metrics endpoints do not (D-07). WebSocket upgrades are not subject to CORS, so
their ``Origin`` is checked against the same allow-list (W-HS-05, G-ORIG-01); so is every
BOSH request (boshd.frontend.bosh.browser_refusal, issue 13): CORS only hides an answer from
the page's scripts, and a form post needs no preflight, so a foreign Origin is refused (403)
before its request is carried out.
"""

from __future__ import annotations

from aiohttp import web

from boshd.config import CorsConfig


def origin_allowed(cors: CorsConfig, origin: str | None) -> bool:
    if origin is None:
        return True  # not a browser cross-origin request
    return "*" in cors.allowed_origins or origin.lower() in cors.allowed_origins


def cors_headers(cors: CorsConfig, origin: str | None) -> dict[str, str]:
    if origin is None or not origin_allowed(cors, origin):
        return {}
    if cors.allow_credentials:
        return {
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Credentials": "true",
            "Vary": "Origin",
        }
    if "*" in cors.allowed_origins:
        return {"Access-Control-Allow-Origin": "*"}
    return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}


def preflight(cors: CorsConfig, request: web.Request) -> web.Response:
    status, headers = preflight_answer(cors, request.headers.get("Origin"))
    if status == 403:
        return web.Response(status=403, text="origin not allowed\n")
    return web.Response(status=status, headers=headers)


def preflight_answer(cors: CorsConfig, origin: str | None) -> tuple[int, dict[str, str]]:
    """G-CORS-01: 204 with the allowed methods and headers, or 403 for a foreign origin."""
    headers = cors_headers(cors, origin)
    if not headers:
        return 403, {}
    allowed = ["Content-Type", *cors.extra_headers]
    headers.update(
        {
            "Access-Control-Allow-Methods": "POST, OPTIONS",
            "Access-Control-Allow-Headers": ", ".join(allowed),
            "Access-Control-Max-Age": str(int(cors.max_age)),
        }
    )
    return 204, headers
