"""Serving: listeners, signals, graceful drain. ``serve()`` is what ``boshd run`` runs.

``serve(config, shutdown_trigger=...)`` takes an awaitable that ends the server, so tests stop
it without signals. SIGTERM and SIGINT drain: new sessions are refused, every live session is
ended with ``system-shutdown`` (B-ERR-07, G-SHUT-01), and the process exits within
``server.graceful_timeout``; a second SIGINT or SIGTERM exits at once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Awaitable

from aiohttp import web

from boshd.config import Config
from boshd.frontend.app import build_app

log = logging.getLogger("boshd")


async def start_sites(runner: web.AppRunner, config: Config) -> list[web.BaseSite]:
    sites: list[web.BaseSite] = []
    for listen in config.server.listen:
        site: web.BaseSite
        if listen.startswith("unix:"):
            path = listen[len("unix:") :]
            site = web.UnixSite(runner, path)
        else:
            host, _, port = listen.rpartition(":")
            site = web.TCPSite(runner, host.strip("[]"), int(port), backlog=1024)
        await site.start()
        sites.append(site)
        log.info("listening on %s", listen)
    return sites


async def serve(config: Config, shutdown_trigger: Awaitable[object] | None = None) -> None:
    app = build_app(config)
    runner = web.AppRunner(
        app,
        handle_signals=False,
        access_log=None,
        shutdown_timeout=config.server.graceful_timeout,
    )
    await runner.setup()
    try:
        await start_sites(runner, config)
        log.info("boshd ready (pid %d, config %s)", os.getpid(), config.source or "built-in")
        if shutdown_trigger is None:
            shutdown_trigger = _signalled()
        await shutdown_trigger
        log.info("draining sessions (up to %gs)", config.server.graceful_timeout)
    finally:
        await runner.cleanup()
        log.info("boshd stopped")


async def _signalled() -> None:
    """Wait for SIGTERM/SIGINT; a second one exits immediately."""
    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def first(signame: str) -> None:
        if stop.done():
            log.warning("second %s: exiting now", signame)
            os._exit(1)
        log.info("%s received", signame)
        stop.set_result(None)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, first, sig.name)
    await stop
