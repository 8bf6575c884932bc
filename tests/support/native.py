"""A native c2s XMPP client (slixmpp 1.17) for end-to-end tests: plain TCP to 127.0.0.1.

Pitfalls found with slixmpp 1.17.0:

* TLS knobs: the 1.17 attributes are ``enable_direct_tls``, ``enable_starttls`` and
  ``enable_plaintext`` (older ``force_starttls`` / ``disable_starttls`` arguments and
  ``use_tls``/``use_ssl`` of ``connect()`` are gone). For a plain-TCP connection to a custom
  address set ``enable_direct_tls = enable_starttls = False``, ``enable_plaintext = True`` and
  call ``connect(host, port)`` (a custom address skips the SRV lookup).
* SASL over an unencrypted stream: slixmpp's ``feature_mechanisms`` refuses PLAIN *and* SCRAM on
  a stream without TLS (``unencrypted_plain`` / ``unencrypted_scram`` default to False; the
  failure is only the log line "No appropriate login method." and a ``failed_all_auth`` event).
  Pass ``plugin_config={"feature_mechanisms": {"unencrypted_plain": True,
  "unencrypted_scram": True}}``.
* Event loop: ``XMLStream.loop`` falls back to ``asyncio.get_event_loop()`` (with warnings
  silenced) or creates and *sets* a new loop when none is running. Construct the client inside
  the running test loop and pass ``loop=asyncio.get_running_loop()`` explicitly; never call
  ``process()`` / ``loop.run_until_complete`` from inside pytest-asyncio.
* ``connect()`` returns a future for the TCP attempt only; wait for the ``session_start`` event
  (and watch ``failed_all_auth`` / ``connection_failed`` / ``disconnected`` so a failure does
  not turn into a timeout).
* Cost: ``ClientXMPP()`` builds ``ssl.create_default_context()`` and loads the system CA
  store unless given ``ssl_context=``: about 120 ms per client on this machine, i.e. most of
  a login. We pass a bare ``ssl.SSLContext(PROTOCOL_TLS_CLIENT)``; a login then takes ~20 ms
  with PLAIN. slixmpp computes SCRAM's PBKDF2 in a Python loop (80-150 ms against Prosody's
  4096+ iterations), so `NativeClient` pins ``use_mech = "PLAIN"`` unless told otherwise
  (``mechanism=None`` lets slixmpp choose; it prefers SCRAM-SHA-256).
* ``xmpp["plugin_name"]`` raises a DeprecationWarning in 1.17 (an error under
  ``filterwarnings = error``): use ``xmpp.plugin["plugin_name"]``.
* Shutdown: ``disconnect()`` returns a future; await it. It sends ``</stream:stream>`` and waits
  (up to ``wait`` s) for the server's close. After that, slixmpp's ``run_filters`` task (started
  by ``connect()``) is still pending on the send queue; cancel it, or pytest-asyncio's loop
  teardown reports "Task was destroyed but it is pending".
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass
from typing import Any, Literal

import slixmpp

MessageType = Literal["chat", "error", "groupchat", "headline", "normal"]


@dataclass(frozen=True)
class ReceivedMessage:
    """A message as the native client saw it."""

    sender: str
    to: str
    body: str
    mtype: str
    msg_id: str


class NativeClient:
    """A logged-in slixmpp client; received messages go to `messages` in arrival order."""

    def __init__(
        self,
        jid: str,
        password: str,
        port: int,
        *,
        host: str = "127.0.0.1",
        send_presence: bool = True,
        mechanism: str | None = "PLAIN",
    ) -> None:
        self.requested_jid = jid
        self.password = password
        self.host = host
        self.port = port
        self.send_presence = send_presence
        self.mechanism = mechanism
        self.messages: asyncio.Queue[ReceivedMessage] = asyncio.Queue()
        self._xmpp: slixmpp.ClientXMPP | None = None
        self._started: asyncio.Future[None] | None = None

    @property
    def xmpp(self) -> slixmpp.ClientXMPP:
        if self._xmpp is None:
            raise RuntimeError("native client not started")
        return self._xmpp

    @property
    def jid(self) -> str:
        """The bound full JID."""
        return str(self.xmpp.boundjid.full)

    async def start(self, timeout: float = 10.0) -> str:
        """Connect, authenticate, bind, optionally send presence; return the bound full JID."""
        loop = asyncio.get_running_loop()
        mech_cfg: dict[str, Any] = {"unencrypted_plain": True, "unencrypted_scram": True}
        if self.mechanism is not None:
            mech_cfg["use_mech"] = self.mechanism
        xmpp = slixmpp.ClientXMPP(
            self.requested_jid,
            self.password,
            plugin_config={"feature_mechanisms": mech_cfg},
            loop=loop,
            # never used (no TLS); avoids ~120 ms of loading the system CA store per client
            ssl_context=ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT),
        )
        xmpp.enable_direct_tls = False
        xmpp.enable_starttls = False
        xmpp.enable_plaintext = True
        self._xmpp = xmpp
        started: asyncio.Future[None] = loop.create_future()
        self._started = started

        def fail(reason: str) -> Any:
            def handler(event: Any) -> None:
                if not started.done():
                    started.set_exception(ConnectionError(f"{reason}: {event!r}"))

            return handler

        async def on_session_start(_event: Any) -> None:
            if self.send_presence:
                xmpp.send_presence()
            if not started.done():
                started.set_result(None)

        def on_message(msg: Any) -> None:
            self.messages.put_nowait(
                ReceivedMessage(
                    sender=str(msg["from"]),
                    to=str(msg["to"]),
                    body=str(msg["body"]),
                    mtype=str(msg["type"]),
                    msg_id=str(msg["id"]),
                )
            )

        xmpp.add_event_handler("session_start", on_session_start)
        xmpp.add_event_handler("message", on_message)
        xmpp.add_event_handler("failed_all_auth", fail("authentication failed"))
        xmpp.add_event_handler("connection_failed", fail("connection failed"))
        xmpp.add_event_handler("disconnected", fail("disconnected before session start"))
        xmpp.connect(self.host, self.port)
        try:
            async with asyncio.timeout(timeout):
                await started
        except BaseException:
            await self.stop()
            raise
        return self.jid

    def send_message(self, to: str, body: str, mtype: MessageType = "chat") -> None:
        """Queue a message (slixmpp sends from its own send queue, in order)."""
        self.xmpp.send_message(mto=slixmpp.JID(to), mbody=body, mtype=mtype)

    async def recv_message(self, timeout: float = 5.0) -> ReceivedMessage:
        async with asyncio.timeout(timeout):
            return await self.messages.get()

    async def recv_messages(self, count: int, timeout: float = 10.0) -> list[ReceivedMessage]:
        out: list[ReceivedMessage] = []
        async with asyncio.timeout(timeout):
            while len(out) < count:
                out.append(await self.messages.get())
        return out

    async def stop(self, timeout: float = 2.0) -> None:
        """Close the stream (waiting up to `timeout` for the server) and cancel slixmpp's tasks."""
        xmpp = self._xmpp
        if xmpp is None:
            return
        self._xmpp = None
        with contextlib.suppress(Exception):
            await xmpp.disconnect(wait=timeout)
        xmpp.cancel_connection_attempt()
        filters = xmpp._run_out_filters  # slixmpp keeps its send-queue task here
        if filters is not None and not filters.done():
            filters.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await filters
        if self._started is not None and not self._started.done():
            self._started.cancel()

    async def __aenter__(self) -> NativeClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
