"""Lean XMPP-over-WebSocket client (RFC 7395) for the load generator, on aiohttp.

Login: ``<open/>``, SASL PLAIN, ``<open/>`` again (restart), bind, waiting on each step for
the frames that answer it. Afterwards a reader task feeds every text frame to the sink, and
``send`` writes one stanza per frame. No DOM: frames are searched with the patterns of
:mod:`bench.xmpp`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import aiohttp

from bench.xmpp import (
    BIND_FEATURE,
    FAILURE,
    JID,
    MECHANISMS,
    NS_FRAMING,
    SUCCESS,
    LoginError,
    bind_iq,
    plain_auth,
)

Sink = Callable[[str], None]


class WsClient:
    """One RFC 7395 connection over a shared aiohttp ``ClientSession``."""

    def __init__(self, session: aiohttp.ClientSession, url: str, domain: str, sink: Sink) -> None:
        self.session = session
        self.url = url
        self.domain = domain
        self.sink = sink
        self.jid = ""
        self.error: str | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None
        self._open = f"<open xmlns='{NS_FRAMING}' to='{domain}' version='1.0'/>"

    async def _until(self, found: Callable[[str], bool], payload: str) -> str:
        assert self.ws is not None
        if payload:
            await self.ws.send_str(payload)
        text = ""
        while not found(text):
            if FAILURE.search(text):
                raise LoginError(f"SASL failure: {text[:300]}")
            msg = await self.ws.receive()
            if msg.type is not aiohttp.WSMsgType.TEXT:
                raise LoginError(f"unexpected WebSocket message {msg.type!r}: {msg.data!r}")
            text += msg.data
        return text

    async def login(self, user: str, password: str, resource: str) -> str:
        try:
            self.ws = await self.session.ws_connect(
                self.url,
                protocols=("xmpp",),
                autoping=True,
                compress=0,
                max_msg_size=1 << 20,
            )
        except aiohttp.ClientError as exc:
            raise LoginError(f"WebSocket connect failed: {exc}") from exc
        if self.ws.protocol != "xmpp":
            raise LoginError(f"server selected subprotocol {self.ws.protocol!r}")
        await self._until(lambda t: MECHANISMS in t, self._open)
        await self._until(lambda t: SUCCESS.search(t) is not None, plain_auth(user, password))
        await self._until(lambda t: BIND_FEATURE in t, self._open)
        text = await self._until(lambda t: JID.search(t) is not None, bind_iq(resource))
        match = JID.search(text)
        assert match is not None
        self.jid = match.group(1)
        return self.jid

    def start(self) -> None:
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.ws is not None
        sink = self.sink
        async for msg in self.ws:
            if msg.type is aiohttp.WSMsgType.TEXT:
                sink(msg.data)
            elif msg.type is aiohttp.WSMsgType.ERROR:
                break
        if self.error is None:
            self.error = "WebSocket closed"

    async def send(self, stanza: str) -> None:
        ws = self.ws
        if ws is None or ws.closed:
            return
        try:
            await ws.send_str(stanza)
        except (ConnectionError, RuntimeError) as exc:
            if self.error is None:
                self.error = f"send failed: {exc}"

    async def close(self) -> None:
        """``<close/>``, then the WebSocket close handshake (bounded)."""
        ws = self.ws
        if ws is None:
            return
        if not ws.closed:
            with contextlib.suppress(Exception):
                await ws.send_str(f"<close xmlns='{NS_FRAMING}'/>")
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2.0):
                    await ws.close()
        self.abort()

    def abort(self) -> None:
        """Stop reading; the TCP connection goes when the ClientSession is closed."""
        if self._reader is not None:
            self._reader.cancel()
            self._reader = None
