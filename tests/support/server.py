"""aiohttp's TestServer, but listening through boshd's own runner (the fast BOSH path in
front of aiohttp), exactly as the daemon serves."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from boshd.frontend.fasthttp import BoshdRunner


class BoshdTestServer(TestServer):
    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:
        return BoshdRunner(self.app, **kwargs)
