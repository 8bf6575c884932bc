"""What keeps boshd's answers from ever acting as a web page (issue 13, finding 2).

boshd's answers carry text that others chose: a BOSH body holds stanzas from any XMPP user,
a host-meta refusal echoes the Host header. If a browser ever shows one as a document on
boshd's origin (a cross-site form can make it navigate there: a ``text/plain`` POST needs no
preflight), an ``<script xmlns='http://www.w3.org/1999/xhtml'>`` inside a ``text/xml``
answer runs with that origin. Two defences, both here:

* :data:`INERT_HEADERS`, on every response of both servers (the fast BOSH front writes
  :data:`INERT_FIELDS`, encoded once; aiohttp adds the table in ``on_response_prepare``, see
  :func:`make_inert`): a CSP that sandboxes the document (opaque origin, no scripts, no forms,
  no plugins) and loads nothing, ``nosniff`` so no answer is taken for another type, no
  framing, no referrer, and ``Cross-Origin-Resource-Policy: same-origin`` so no other site can
  pull an answer in with ``<img>``/``<script>`` or a ``no-cors`` fetch. None of these bind
  XHR/fetch clients: a CSP governs documents, not the responses a script reads, and CORP is
  only checked for ``no-cors`` requests, so BOSH clients and host-meta readers (CORS requests)
  are unaffected.
* :func:`boshd.frontend.bosh.browser_refusal`: a BOSH request that a browser made as a navigation
  (``Sec-Fetch-Mode: navigate``: an HTML form or a link; an XHR or fetch client never sends
  it), or whose ``Origin`` ``cors.allowed_origins`` does not allow, is answered 403 before
  its body is looked at, so it never reaches a session.

The one exception: a request aiohttp cannot parse at all (before any routing) gets aiohttp's
own ``400`` in ``text/plain`` without these headers. No browser sends such a request, and a
browser never renders ``text/plain`` as markup.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

from aiohttp import web

INERT_HEADERS: Final[Mapping[str, str]] = MappingProxyType(
    {
        # `sandbox` without allow-*: an opaque origin, no scripts, forms, popups or plugins
        # (so form-action and base-uri add nothing); default-src 'none': nothing is loaded,
        # no beacon; frame-ancestors (not covered by default-src): never framed.
        "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'; sandbox",
        "X-Content-Type-Options": "nosniff",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Referrer-Policy": "no-referrer",
    }
)
"""Every response boshd writes carries these; one table for both servers."""

INERT_FIELDS: Final[bytes] = b"".join(
    f"{name}: {value}\r\n".encode("ascii") for name, value in INERT_HEADERS.items()
)
""":data:`INERT_HEADERS` as HTTP/1.1 field lines, for the fast front's answers."""


async def _add_inert_headers(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.update(INERT_HEADERS)


def make_inert(app: web.Application) -> None:
    """Every response `app` prepares (handlers' answers, raised HTTP errors, aiohttp's 404
    and 405, a 500 for a handler that failed, WebSocket handshakes) gets
    :data:`INERT_HEADERS`."""
    app.on_response_prepare.append(_add_inert_headers)
