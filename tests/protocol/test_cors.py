"""CORS on the BOSH endpoint and the Origin check for WebSocket (issue 4)."""

from __future__ import annotations

import aiohttp
import pytest

from tests.protocol.conftest import AppFactory, body

ORIGIN = "http://app.example:8080"
PREFLIGHT = {
    "Origin": ORIGIN,
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "content-type",
}


async def test_preflight_answered(make_app: AppFactory) -> None:
    """OPTIONS gets allowed origin, methods, headers and max-age (G-CORS-01)."""
    client = await make_app()
    async with client.options("/http-bind", headers=PREFLIGHT) as resp:
        assert resp.status in (200, 204)
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
        assert {"POST", "OPTIONS"} <= {
            m.strip() for m in resp.headers["Access-Control-Allow-Methods"].split(",")
        }
        assert "content-type" in resp.headers["Access-Control-Allow-Headers"].lower()
        assert int(resp.headers["Access-Control-Max-Age"]) > 0


async def test_every_bosh_response_carries_acao(make_app: AppFactory) -> None:
    """Normal, terminate and HTTP error responses, and the GET page, all carry ACAO
    (G-CORS-02)."""
    client = await make_app()
    headers = {"Origin": ORIGIN, "Content-Type": "text/xml; charset=utf-8"}
    bad_to = body(1, to="unknown.invalid", ver="1.6", wait="4", hold="1")
    async with client.post("/http-bind", data=bad_to, headers=headers) as resp:
        assert b"host-unknown" in await resp.read()
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
    legacy_bad = "<body rid='1' xmlns='urn:wrong'/>"  # legacy (no ver) -> HTTP 400
    async with client.post("/http-bind", data=legacy_bad, headers=headers) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == "*"
    async with client.get("/http-bind", headers=headers) as resp:
        assert resp.status == 200  # the informational page (issue 16 #7)
        assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_credentials_mode_echoes_exact_origin(make_app: AppFactory) -> None:
    """With credentials the exact origin is echoed with ACAC true, never '*' (G-CORS-03)."""
    client = await make_app(cors={"allowed_origins": [ORIGIN], "allow_credentials": True})
    async with client.options("/http-bind", headers=PREFLIGHT) as resp:
        assert resp.headers["Access-Control-Allow-Origin"] == ORIGIN
        assert resp.headers["Access-Control-Allow-Credentials"] == "true"
        assert "Origin" in resp.headers["Vary"]


async def test_disallowed_origin_gets_no_cors(make_app: AppFactory) -> None:
    """An origin off the allow-list gets no ACAO, and its preflight is refused (G-ORIG-01)."""
    client = await make_app(cors={"allowed_origins": ["https://good.example"]})
    evil = {**PREFLIGHT, "Origin": "https://evil.example"}
    async with client.options("/http-bind", headers=evil) as resp:
        assert resp.status == 403
        assert "Access-Control-Allow-Origin" not in resp.headers
    async with client.post(
        "/http-bind",
        data=body(1, to="x.invalid", ver="1.6"),
        headers={"Origin": "https://evil.example"},
    ) as resp:
        assert "Access-Control-Allow-Origin" not in resp.headers


async def test_health_and_metrics_have_no_cors(make_app: AppFactory) -> None:
    """Permissive CORS is not blanket: operational endpoints get none (D-07)."""
    client = await make_app()
    for path in ("/healthz", "/metrics"):
        async with client.get(path, headers={"Origin": ORIGIN}) as resp:
            assert resp.status == 200
            assert "Access-Control-Allow-Origin" not in resp.headers


async def test_websocket_origin_allow_list(make_app: AppFactory) -> None:
    """A WebSocket from a disallowed Origin is refused with 403 before any upstream
    connection; an allowed one is accepted (W-HS-05, G-ORIG-01)."""
    client = await make_app(cors={"allowed_origins": ["https://good.example"]})
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await client.ws_connect(
            "/xmpp-websocket", protocols=("xmpp",), headers={"Origin": "https://evil.example"}
        )
    assert info.value.status == 403
    ws = await client.ws_connect(
        "/xmpp-websocket", protocols=("xmpp",), headers={"Origin": "https://good.example"}
    )
    assert ws.protocol == "xmpp"
    await ws.close()
