"""A TCP relay on 127.0.0.1 that a test can break like a real network or proxy.

`FlakyProxy` accepts connections on a free port and relays each one to a fixed target, byte for
byte. The test controls the "network":

* `cut()` resets every open client connection (RST, as a proxy or NAT that drops an idle
  long-poll does) and closes its upstream half without sending anything more;
* `hold()` / `release()`: while held, bytes from clients are still read (so a client's close is
  seen at once) but buffered, not forwarded (a request stuck in a slow network), and forwarded
  in order on release;
* `swallow()` / `unswallow()`: while swallowing, bytes from the target to the clients are
  dropped (a response lost on the way back).

Everything each client sent and received is kept per connection (`Link.sent`,
`Link.received`), so a test can see which requests crossed which TCP connection (for BOSH:
`rids_sent()`), or what a client wrote to a server before it closed. `Link.client_ended` says
how the client side ended: ``"eof"`` (FIN), ``"reset"`` (RST / error) or ``"cut"`` (by us);
`Link.received_when_ended` is how many bytes the client had been sent by then.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from dataclasses import dataclass, field
from types import TracebackType

_RID = re.compile(rb"""\srid\s*=\s*["']([0-9]+)["']""")


@dataclass(eq=False)
class Link:
    """One client connection and its upstream half."""

    number: int
    client: asyncio.StreamWriter
    upstream: asyncio.StreamWriter | None = None
    sent: bytearray = field(default_factory=bytearray)
    received: bytearray = field(default_factory=bytearray)
    backlog: bytearray = field(default_factory=bytearray)  # read while held, not yet forwarded
    closed: bool = False
    client_ended: str | None = None
    received_when_ended: int = 0

    def end(self, how: str) -> None:
        if self.client_ended is None:
            self.client_ended = how
            self.received_when_ended = len(self.received)


class FlakyProxy:
    """Relay ``127.0.0.1:<port>`` -> ``target_host:target_port``; see the module docstring."""

    def __init__(self, target_port: int, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.links: list[Link] = []
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._flowing = asyncio.Event()  # an Event only as a flag: nothing waits on it
        self._flowing.set()
        self._swallowing = False

    async def start(self) -> FlakyProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def url(self, path: str = "") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    # ------------------------------------------------------------------ faults

    def cut(self) -> int:
        """Reset every open client connection; return how many were cut."""
        count = 0
        for link in self.links:
            if not link.closed:
                link.end("cut")
                _reset(link.client)
                if link.upstream is not None:
                    link.upstream.transport.abort()
                link.closed = True
                count += 1
        return count

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()
        for link in self.links:
            self._forward(link)

    def swallow(self) -> None:
        self._swallowing = True

    def unswallow(self) -> None:
        self._swallowing = False

    @property
    def open_links(self) -> list[Link]:
        return [link for link in self.links if not link.closed]

    def rids_sent(self) -> list[tuple[int, int]]:
        """(connection number, rid) for every BOSH body the clients sent, in order."""
        return [
            (link.number, int(m.group(1)))
            for link in self.links
            for m in _RID.finditer(bytes(link.sent))
        ]

    # ------------------------------------------------------------------ relaying

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link(len(self.links), writer)
        self.links.append(link)
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            up_reader, link.upstream = await asyncio.open_connection(*self.target)
            back = asyncio.create_task(self._pump_back(link, up_reader))
            self._tasks.add(back)
            back.add_done_callback(self._tasks.discard)
            await self._pump_out(link, reader)
            link.end("eof")
        except (ConnectionError, OSError):
            link.end("reset")
        finally:
            self._tasks.discard(task)
            self._drop(link)

    async def _pump_out(self, link: Link, reader: asyncio.StreamReader) -> None:
        while data := await reader.read(65536):
            link.sent += data
            link.backlog += data
            self._forward(link)
            if link.closed:
                return

    def _forward(self, link: Link) -> None:
        if not self._flowing.is_set() or link.closed or link.upstream is None or not link.backlog:
            return
        link.upstream.write(bytes(link.backlog))
        link.backlog.clear()

    async def _pump_back(self, link: Link, reader: asyncio.StreamReader) -> None:
        try:
            while data := await reader.read(65536):
                if link.closed:
                    return
                link.received += data
                if not self._swallowing:
                    link.client.write(data)
                    await link.client.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self._drop(link)

    def _drop(self, link: Link) -> None:
        """Close both halves quietly (the other side ended, or we were stopped)."""
        link.closed = True
        for writer in (link.client, link.upstream):
            if writer is not None and not writer.transport.is_closing():
                writer.transport.abort()

    # ------------------------------------------------------------------ lifecycle

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.release()
        for link in self.links:
            self._drop(link)
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> FlakyProxy:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort with SO_LINGER 0: the peer gets a RST, not a FIN."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()
