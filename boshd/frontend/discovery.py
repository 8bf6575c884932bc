"""XEP-0156 discovery: /.well-known/host-meta (XRD) and /.well-known/host-meta.json (JRD).

The ``Host`` header picks the XMPP domain; a domain boshd serves gets links to the configured
public endpoints (``discovery.bosh_url``, ``discovery.websocket_url``), so one connection
manager can serve many domains (D-09). Only ``https://`` and ``wss://`` URLs are published, and
only over HTTPS (D-02, A-26), unless ``discovery.allow_insecure`` is set for development.
These two resources carry ``Access-Control-Allow-Origin: *`` so cross-origin web clients can
read them (D-06); nothing else gets that header from here (D-07).
"""

from __future__ import annotations

import json
from xml.sax.saxutils import quoteattr

from aiohttp import web

from boshd.frontend.state import APP_STATE, is_secure

XRD_NS = "http://docs.oasis-open.org/ns/xri/xrd-1.0"
REL_BOSH = "urn:xmpp:alt-connections:xbosh"  # D-01
REL_WEBSOCKET = "urn:xmpp:alt-connections:websocket"
CORS = {"Access-Control-Allow-Origin": "*"}  # D-06; readable without credentials (D-08)


def _links(request: web.Request) -> list[tuple[str, str]]:
    state = request.app[APP_STATE]
    config = state.config
    d = config.discovery
    host = (request.host or "").rsplit(":", 1)[0].strip("[]").lower()
    served = host in config.upstream.domains or (config.upstream.allow_any_domain and host)
    if not served:
        raise web.HTTPNotFound(text=f"no XMPP service for {host!r}\n", headers=CORS)
    if not d.allow_insecure and not is_secure(request, config):
        raise web.HTTPNotFound(
            text="host-meta is only served over HTTPS (XEP-0156)\n", headers=CORS
        )
    links = [
        (rel, url) for rel, url in ((REL_BOSH, d.bosh_url), (REL_WEBSOCKET, d.websocket_url)) if url
    ]
    if not links:
        raise web.HTTPNotFound(text="no endpoints configured for discovery\n", headers=CORS)
    return links


async def host_meta(request: web.Request) -> web.Response:
    """The XRD form (D-03, D-04)."""
    links = "".join(
        f"<Link rel={quoteattr(rel)} href={quoteattr(url)}/>" for rel, url in _links(request)
    )
    text = f"<?xml version='1.0' encoding='utf-8'?>\n<XRD xmlns='{XRD_NS}'>{links}</XRD>\n"
    return web.Response(text=text, content_type="application/xrd+xml", headers=CORS)


async def host_meta_json(request: web.Request) -> web.Response:
    """The JRD form (D-03, D-04)."""
    links = [{"rel": rel, "href": url} for rel, url in _links(request)]
    return web.Response(
        text=json.dumps({"links": links}), content_type="application/json", headers=CORS
    )
