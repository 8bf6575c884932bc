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

A request aiohttp cannot parse at all gets aiohttp's own ``400`` before any routing, so no
``on_response_prepare`` runs for it; its connections are served by :class:`InertErrors`,
which adds the same headers to those answers (see :func:`inert_errors`).

Every answer also names its server as plain :data:`SERVER` (issue 16, item 7): aiohttp's
default ``Server: Python/3.x aiohttp/3.y`` tells a scanner which library versions to try.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, cast

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


SERVER: Final[str] = "boshd"
"""The ``Server`` field of every answer: the software, no version (issue 16, item 7)."""

SERVER_FIELD: Final[bytes] = f"Server: {SERVER}\r\n".encode("ascii")
""":data:`SERVER` as an HTTP/1.1 field line, for the fast front's answers."""


def _finish_headers(response: web.StreamResponse) -> None:
    response.headers.update(INERT_HEADERS)
    # aiohttp fills in its own Server value before the hook runs; this replaces it.
    response.headers["Server"] = SERVER


async def _add_inert_headers(request: web.Request, response: web.StreamResponse) -> None:
    _finish_headers(response)


def make_inert(app: web.Application) -> None:
    """Every response `app` prepares (handlers' answers, raised HTTP errors, aiohttp's 404
    and 405, a 500 for a handler that failed, WebSocket handshakes) gets
    :data:`INERT_HEADERS` and ``Server:`` :data:`SERVER`."""
    app.on_response_prepare.append(_add_inert_headers)


class InertErrors(web.RequestHandler):
    """aiohttp's connection handler, whose own error answers are finished like the app's.

    aiohttp answers a request it cannot parse (a malformed request line or header, a bad
    ``Content-Length``, ...) from its connection handler, before the request reaches an
    application, so no ``on_response_prepare`` runs: the answer would carry aiohttp's
    ``Server`` value and none of :data:`INERT_HEADERS`. ``handle_error`` builds every
    such answer (and the 500 of a handler that failed, which the app's hook also finishes)."""

    __slots__ = ()

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        response = super().handle_error(request, status, exc, message)
        _finish_headers(response)
        return response


def inert_errors(handler: web.RequestHandler) -> web.RequestHandler:
    """`handler`, made by aiohttp's ``web.Server`` for one connection, as an
    :class:`InertErrors`. aiohttp builds its handlers itself (with the runner's settings), so
    the class is changed on the object it made: the subclass adds no state (``__slots__``
    is empty), only the override."""
    handler.__class__ = InertErrors
    return handler


class _InertServer:
    """Stands in for aiohttp's ``web.Server``: its connection handlers are
    :class:`InertErrors`; everything else is the wrapped server's."""

    def __init__(self, inner: web.Server) -> None:
        self._inner = inner

    def __call__(self) -> web.RequestHandler:
        return inert_errors(self._inner())

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class InertRunner(web.AppRunner):
    """``web.AppRunner`` whose connections answer even unparseable requests with
    :data:`INERT_HEADERS` and :data:`SERVER` (the admin API's runner; the main listeners'
    runner, :class:`boshd.frontend.fasthttp.BoshdRunner`, does the same)."""

    async def _make_server(self) -> web.Server:
        return cast(web.Server, _InertServer(await super()._make_server()))
