"""Serving: listeners, signals, reload, graceful drain. ``serve()`` is what ``boshd run`` runs.

``serve(config, shutdown_trigger=...)`` takes an awaitable that ends the server, so tests stop
it without signals. With signals:

* SIGTERM / SIGINT drain: readiness goes false, new sessions are refused, every live session
  is ended with ``system-shutdown`` (B-ERR-07, G-SHUT-01) after its pending client payload went
  upstream, and the process exits within ``server.graceful_timeout``. A second SIGTERM or
  SIGINT exits at once.
* SIGHUP reloads the config file: log level, limits, routes, BOSH timers, TLS certificate,
  and the secrets (``auth.token_secret``, ``prebind.secret``, ``admin.token``, inline or
  ``*_file``): each is read only at start and at reload, so after a reload the new secret is
  in force and the old one is refused (issue 13, finding 5). Live sessions keep running with
  what they negotiated. An invalid file (or a secret file now missing or blank) keeps the old
  configuration, secrets included, and logs every problem. Changes to the keys in
  ``RESTART_KEYS`` need a restart (logged).

Under systemd (``Type=notify``) it reports READY, RELOADING, STOPPING and STATUS, and sends
watchdog keep-alives when ``WatchdogSec`` is set; sockets passed by socket activation
(``LISTEN_FDS``) are served instead of ``server.listen``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import ssl
import stat
from collections.abc import Awaitable

from aiohttp import web

from boshd.config import Config, changed_secrets, load_config
from boshd.core.errors import ConfigError
from boshd.frontend.admin import build_admin_app
from boshd.frontend.app import build_app
from boshd.frontend.auth import Authenticator
from boshd.frontend.fasthttp import BoshdRunner
from boshd.frontend.inert import InertRunner
from boshd.frontend.state import APP_STATE
from boshd.sdnotify import Notifier, listen_fds, watchdog_interval

log = logging.getLogger("boshd")

#: Keys used once, when the listeners and routes are set up: a reload that changes one logs
#: that it takes effect after a restart instead of pretending.
RESTART_KEYS = (
    "server.listen",
    "server.fast_bosh",
    "server.bosh_path",
    "server.websocket_path",
    "server.health_path",
    "server.ready_path",
    "server.metrics_path",
    "prebind.path",
    "admin.listen",
)


def tls_context(config: Config) -> ssl.SSLContext | None:
    if not config.server.tls_cert_file:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(config.server.tls_cert_file, config.server.tls_key_file)
    return context


async def start_sites(
    runner: web.AppRunner,
    listen: tuple[str, ...],
    context: ssl.SSLContext | None,
    *,
    inherit: bool = True,
) -> list[web.BaseSite]:
    """Start one site per listener; sockets from systemd socket activation win if present."""
    sites: list[web.BaseSite] = []
    for fd in listen_fds() if inherit else []:
        sock = socket.socket(fileno=fd)
        site: web.BaseSite = web.SockSite(runner, sock, ssl_context=context)
        await site.start()
        sites.append(site)
        log.info("listening on inherited socket %s", sock.getsockname() or f"fd {fd}")
    if sites:
        return sites
    for item in listen:
        if item.startswith("unix:"):
            path = item[len("unix:") :]
            with contextlib.suppress(FileNotFoundError):
                if stat.S_ISSOCK(os.stat(path).st_mode):
                    os.unlink(path)  # a stale socket from an earlier run
            site = web.UnixSite(runner, path)
        else:
            host, _, port = item.rpartition(":")
            site = web.TCPSite(
                runner, host.strip("[]"), int(port), backlog=1024, ssl_context=context
            )
        await site.start()
        sites.append(site)
        server = getattr(site, "_server", None)
        bound = [s.getsockname() for s in getattr(server, "sockets", None) or []]
        where = item if item.startswith("unix:") else ", ".join(f"{a[0]}:{a[1]}" for a in bound)
        tls = " (TLS)" if context and not item.startswith("unix:") else ""
        log.info("listening on %s%s", where or item, tls)
    return sites


class Daemon:
    """Owns the runner; reload and drain go through here."""

    def __init__(self, config: Config, notifier: Notifier | None = None) -> None:
        self.config = config
        for warning in config.warnings:
            log.warning("%s", warning)
        self.notifier = notifier or Notifier()
        self.app = build_app(config)
        self.state = self.app[APP_STATE]
        self.tls = tls_context(config)
        self.runner = BoshdRunner(
            self.app,
            handle_signals=False,
            access_log=None,
            shutdown_timeout=config.server.graceful_timeout,
            keepalive_timeout=config.server.keepalive_timeout,
        )
        self.admin_runner: web.AppRunner | None = None
        if config.admin.listen:
            admin = build_admin_app(self.app)
            self.admin_runner = InertRunner(admin, handle_signals=False, access_log=None)

    def status_line(self) -> str:
        sessions = len(self.state.registry)
        return f"{sessions} session{'s' if sessions != 1 else ''}"

    def reload(self) -> bool:
        """Re-read the config file; on any problem keep the old config and log each one."""
        path = self.config.source
        if not path:
            log.warning("SIGHUP: no config file to reload")
            return False
        self.notifier.reloading()
        try:
            new = load_config(path)
            context = tls_context(new) if new.server.tls_cert_file else None
        except ConfigError as exc:
            log.error("reload of %s failed; keeping the running configuration:", path)
            for problem in exc.problems:
                log.error("  %s", problem)
            self.notifier.ready(self.status_line())
            return False
        except (OSError, ssl.SSLError) as exc:
            log.error("reload failed: TLS certificate: %s; keeping the running configuration", exc)
            self.notifier.ready(self.status_line())
            return False
        old = self.config
        for key in RESTART_KEYS:
            section, name = key.split(".")
            if getattr(getattr(new, section), name) != getattr(getattr(old, section), name):
                log.warning("%s changed: takes effect after a restart", key)
        if bool(new.server.tls_cert_file) != (self.tls is not None):
            log.warning("server.tls_cert_file turned TLS on or off: takes effect after a restart")
        for warning in new.warnings:
            log.warning("%s", warning)
        if self.tls is not None and context is not None:
            # New handshakes use the new certificate; open connections keep theirs.
            self.tls.load_cert_chain(new.server.tls_cert_file, new.server.tls_key_file)
        # The Authenticator holds the token secret: compare the secret too, not only the
        # [auth] keys, whose file name does not change when the file's content does.
        secret = new.secrets.auth_token_secret
        if (new.auth, secret) != (old.auth, old.secrets.auth_token_secret):
            old_auth = self.state.auth
            self.state.auth = Authenticator(new.auth, secret)
            asyncio.get_running_loop().create_task(old_auth.close())
        for key in changed_secrets(old, new):
            log.info("%s: new secret in force", key)
        # Everything else (prebind secret, admin token, limits...) is read from here.
        self.config = new
        self.state.config = new
        self.state.registry.reconfigure(new)
        logging.getLogger().setLevel(new.log.level.upper())
        log.info("configuration reloaded from %s", path)
        self.notifier.ready(self.status_line())
        return True

    async def run(self, shutdown_trigger: Awaitable[object] | None = None) -> None:
        await self.runner.setup()
        # Start-up objects (modules, the XSDs, the config) live as long as the process: move
        # them out of the collector's sight so full collections scan sessions only. Before the
        # listeners start, so that no session object is ever frozen.
        gc.collect()
        gc.freeze()
        watchdog: asyncio.Task[None] | None = None
        try:
            await start_sites(self.runner, self.config.server.listen, self.tls)
            if self.admin_runner is not None:
                await self.admin_runner.setup()
                await start_sites(self.admin_runner, self.config.admin.listen, None, inherit=False)
            log.info(
                "boshd ready (pid %d, config %s)", os.getpid(), self.config.source or "built-in"
            )
            self.notifier.ready(self.status_line())
            interval = watchdog_interval()
            watchdog = asyncio.create_task(self._keepalive(interval))
            await (shutdown_trigger if shutdown_trigger is not None else self._signals())
            timeout = self.config.server.graceful_timeout
            log.info("draining %s (up to %gs)", self.status_line(), timeout)
            self.notifier.stopping()
            # Still listening: readiness fails and creations get system-shutdown, while live
            # clients come back for their terminate(system-shutdown) (B-ERR-07, G-SHUT-01).
            await self.state.registry.drain(timeout)
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if self.admin_runner is not None:
                await self.admin_runner.cleanup()
            await self.runner.cleanup()  # on_shutdown drains live sessions
            self.notifier.close()
            log.info("boshd stopped")

    async def _keepalive(self, watchdog: float | None) -> None:
        """STATUS every few seconds; WATCHDOG=1 at half of WatchdogSec when asked."""
        period = min(watchdog or 10.0, 10.0)
        while True:
            await asyncio.sleep(period)
            if watchdog:
                self.notifier.watchdog()
            self.notifier.status(self.status_line())

    async def _signals(self) -> None:
        loop = asyncio.get_running_loop()
        stop: asyncio.Future[None] = loop.create_future()

        def terminate(signame: str) -> None:
            if stop.done():
                log.warning("second %s: exiting now", signame)
                os._exit(1)
            log.info("%s received", signame)
            stop.set_result(None)

        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, terminate, sig.name)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await stop
        finally:
            loop.remove_signal_handler(signal.SIGHUP)


async def serve(config: Config, shutdown_trigger: Awaitable[object] | None = None) -> None:
    await Daemon(config).run(shutdown_trigger)
