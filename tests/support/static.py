"""A static web server on 127.0.0.1 for browser pages (the browser tier and `make demo`).

The pages must come from a different origin (port) than boshd, so that the browser really does
CORS for BOSH (a preflight: Strophe posts ``Content-Type: text/xml``, G-CORS-01) and sends an
``Origin`` header boshd checks on WebSocket upgrades (W-HS-05, G-ORIG-01).

`StaticServer` maps URL prefixes to directories (``{"/": pages, "/node_modules": modules}``),
listens on a port the kernel picks (``127.0.0.1:0``, read back once bound) and sends every file
with ``Cache-Control: no-store`` so a reloaded page never runs a stale script. Directory listings
are off, symlinks are not followed out of a mapped directory (aiohttp's defaults).

`routes` adds dynamic handlers (path -> aiohttp handler, any method) on the pages' origin, for
what a web application serves next to its pages (e.g. a prebind endpoint, docs/api.md).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import TracebackType

from aiohttp import web
from aiohttp.typedefs import Handler


@web.middleware
async def _no_store(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers["Cache-Control"] = "no-store"
    return response


class StaticServer:
    """Serve `mounts` (URL prefix -> directory) on ``http://127.0.0.1:<port>``."""

    def __init__(
        self,
        mounts: Mapping[str, Path],
        host: str = "127.0.0.1",
        port: int = 0,
        routes: Mapping[str, Handler] | None = None,
    ) -> None:
        for prefix, directory in mounts.items():
            if not directory.is_dir():
                raise FileNotFoundError(f"static mount {prefix!r}: no directory {directory}")
        self.mounts = dict(mounts)
        self.routes = dict(routes or {})
        self.host = host
        self.port = port
        self._runner: web.AppRunner | None = None

    @property
    def origin(self) -> str:
        """The origin the pages run in (what the browser sends as ``Origin``)."""
        return f"http://{self.host}:{self.port}"

    def url(self, path: str) -> str:
        return f"{self.origin}/{path.lstrip('/')}"

    async def start(self) -> StaticServer:
        app = web.Application(middlewares=[_no_store])
        for path, handler in self.routes.items():  # before the static "/" mount, which matches all
            app.router.add_route("*", path, handler)
        # Longest prefix first: aiohttp matches routes in registration order.
        for prefix, directory in sorted(self.mounts.items(), key=lambda m: -len(m[0])):
            app.router.add_static(prefix, directory)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        await site.start()
        self._runner = runner
        bound = [a for a in runner.addresses if isinstance(a, tuple)]
        self.port = bound[0][1]
        return self

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> StaticServer:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
