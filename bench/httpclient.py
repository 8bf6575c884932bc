"""A lean HTTP/1.1 POST client for the BOSH load generator: keep-alive connections, one
request at a time per connection, callbacks instead of tasks.

Why not ``aiohttp.ClientSession``: on this machine it costs about 270-300 µs of client CPU per
POST against 40-80 µs for this (measured with the same server, uvloop or not). A BOSH chat
exchange is two requests per message, so at a few thousand messages per second aiohttp alone
would use a whole core of the 2 the servers need; the generator must not be the bottleneck.

Only what BOSH needs: ``POST`` to one path, ``Content-Length`` or chunked responses,
``Connection: close`` honoured. A request that fails on a reused keep-alive connection before
any response byte arrived (the server closed it while idle) is resent once on a new one.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import Any, cast

# callback(tag, status, body): status is the HTTP status, or -1 with an error text as body.
Callback = Callable[[Any, int, bytes], None]


class _Request:
    __slots__ = ("callback", "data", "retried", "tag", "timeout")

    def __init__(self, data: bytes, callback: Callback, tag: Any, timeout: float) -> None:
        self.data = data
        self.callback = callback
        self.tag = tag
        self.timeout = timeout
        self.retried = False


class _Connection(asyncio.Protocol):
    """One keep-alive connection; parses one response at a time."""

    def __init__(self, pool: HttpPool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.request: _Request | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.buf = bytearray()
        self.used = 0
        self.got_bytes = False
        self.status = 0
        self.need = -1  # body bytes still expected; -1 while reading the head
        self.chunked = False
        self.close_after = False
        self.chunks: list[bytes] = []

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's TCPTransport is not an asyncio.Transport subclass, hence the cast
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        self.buf += data
        self._parse()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.pool._lost(self)
        request = self.request
        if request is None:
            return
        self._clear()
        if self.used > 1 and not self.got_bytes and not request.retried:
            request.retried = True  # stale keep-alive connection: resend once
            self.pool._dispatch(request)
            return
        request.callback(request.tag, -1, f"connection lost: {exc or 'closed'}".encode())

    # -- requests ------------------------------------------------------------------------

    def send(self, request: _Request) -> None:
        assert self.transport is not None
        self.request = request
        self.used += 1
        self.got_bytes = False
        self.timer = self.pool.loop.call_later(request.timeout, self._timed_out)
        self.transport.write(request.data)

    def _timed_out(self) -> None:
        self.timer = None
        request = self.request
        if request is None:
            return
        self.request = None
        if self.transport is not None:
            self.transport.abort()
        request.callback(request.tag, -1, b"timeout")

    def _clear(self) -> None:
        self.request = None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None

    def _parse(self) -> None:
        buf = self.buf
        while True:
            if self.need < 0 and not self.chunked:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                self._head(bytes(buf[:end]))
                del buf[: end + 4]
            if self.chunked:
                body = self._parse_chunks()
                if body is None:
                    return
            else:
                if len(buf) < self.need:
                    return
                body = bytes(buf[: self.need])
                del buf[: self.need]
            self._complete(body)
            if not buf or self.transport is None:
                return

    def _head(self, head: bytes) -> None:
        lines = head.split(b"\r\n")
        self.status = int(lines[0][9:12])
        self.need = 0
        self.chunked = False
        self.close_after = lines[0].startswith(b"HTTP/1.0")
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            key = name.strip().lower()
            if key == b"content-length":
                self.need = int(value)
            elif key == b"transfer-encoding" and b"chunked" in value.lower():
                self.chunked = True
            elif key == b"connection":
                self.close_after = value.strip().lower() == b"close"

    def _parse_chunks(self) -> bytes | None:
        buf = self.buf
        while True:
            end = buf.find(b"\r\n")
            if end < 0:
                return None
            size = int(bytes(buf[:end]).split(b";")[0], 16)
            if size == 0:
                trailer = buf.find(b"\r\n\r\n", end)
                if trailer < 0:
                    return None
                del buf[: trailer + 4]
                body = b"".join(self.chunks)
                self.chunks = []
                self.chunked = False
                return body
            if len(buf) < end + 2 + size + 2:
                return None
            self.chunks.append(bytes(buf[end + 2 : end + 2 + size]))
            del buf[: end + 2 + size + 2]

    def _complete(self, body: bytes) -> None:
        request = self.request
        self._clear()
        self.need = -1
        if self.close_after and self.transport is not None:
            self.transport.close()
        else:
            self.pool._release(self)
        if request is not None:
            request.callback(request.tag, self.status, body)


class HttpPool:
    """Keep-alive connections to one ``http://host:port/path`` for POST requests."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str,
        *,
        content_type: str = "text/xml; charset=utf-8",
        max_connections: int = 15000,
    ) -> None:
        self.host = host
        self.port = port
        self.loop = asyncio.get_running_loop()
        self.max_connections = max_connections
        self._prefix = (
            f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: "
        ).encode()
        self._idle: list[_Connection] = []
        self._all: set[_Connection] = set()
        self._opening = 0
        self._queue: deque[_Request] = deque()
        self.requests = 0
        self.connects = 0
        self.closed = False

    @property
    def connections(self) -> int:
        return len(self._all) + self._opening

    def post(self, body: bytes, callback: Callback, tag: Any = None, timeout: float = 70.0) -> None:
        """POST ``body``; ``callback(tag, status, body)`` is called exactly once."""
        data = self._prefix + str(len(body)).encode() + b"\r\n\r\n" + body
        self.requests += 1
        self._dispatch(_Request(data, callback, tag, timeout))

    async def request(self, body: bytes, timeout: float = 70.0) -> tuple[int, bytes]:
        """POST ``body`` and wait for (status, body); status -1 on a transport failure."""
        future: asyncio.Future[tuple[int, bytes]] = self.loop.create_future()

        def done(_tag: Any, status: int, data: bytes) -> None:
            if not future.done():
                future.set_result((status, data))

        self.post(body, done, None, timeout)
        return await future

    def _dispatch(self, request: _Request) -> None:
        if self.closed:
            request.callback(request.tag, -1, b"pool closed")
            return
        if self._idle:
            self._idle.pop().send(request)
        elif self.connections < self.max_connections:
            self._opening += 1
            self.loop.create_task(self._open(request))
        else:
            self._queue.append(request)

    async def _open(self, request: _Request) -> None:
        try:
            _, conn = await self.loop.create_connection(
                lambda: _Connection(self), self.host, self.port
            )
        except OSError as exc:
            self._opening -= 1
            request.callback(request.tag, -1, f"connect failed: {exc}".encode())
            return
        self._opening -= 1
        self.connects += 1
        self._all.add(conn)
        if self.closed:
            self._all.discard(conn)
            if conn.transport is not None:
                conn.transport.close()
            request.callback(request.tag, -1, b"pool closed")
            return
        conn.send(request)

    def _release(self, conn: _Connection) -> None:
        if self._queue:
            conn.send(self._queue.popleft())
        elif self.closed:
            if conn.transport is not None:
                conn.transport.close()
        else:
            self._idle.append(conn)

    def _lost(self, conn: _Connection) -> None:
        self._all.discard(conn)
        with contextlib.suppress(ValueError):
            self._idle.remove(conn)
        if self._queue and not self.closed and self.connections < self.max_connections:
            self._opening += 1
            self.loop.create_task(self._open(self._queue.popleft()))

    def close(self) -> None:
        """Drop every connection (pending requests fail with status -1)."""
        self.closed = True
        while self._queue:
            request = self._queue.popleft()
            request.callback(request.tag, -1, b"pool closed")
        for conn in list(self._all):
            if conn.transport is not None:
                conn.transport.abort()
        self._idle.clear()
