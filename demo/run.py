"""``make demo``: chat with an echo bot in your browser, through boshd, over BOSH or WebSocket.

Starts, all on 127.0.0.1 and all stopped again by Ctrl-C (or SIGTERM):

1. a private Prosody (temporary directory, free ports) with the accounts ``demo1`` /
   ``demo1-pw`` and ``echo`` / ``echo-pw`` on the domain ``localhost``;
2. boshd in-process in front of it (``/http-bind`` and ``/xmpp-websocket``), with CORS and
   the WebSocket Origin check allowing exactly the demo page's origin;
3. the echo bot: a BOSH client logged in as ``echo@localhost/bot`` *through boshd* that answers
   every chat message with the same text (the idea of StropheJS's classic echobot example) and
   accepts presence subscriptions;
4. a web server for the demo page (``demo/static/``: plain StropheJS, loaded from
   ``tests/e2e/browser/node_modules`` - run ``npm ci --prefix tests/e2e/browser`` once).

Then it prints the URL to open. Run as ``.venv/bin/python demo/run.py`` from the project root
(``make demo`` does); ``--help`` lists the port options.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

from aiohttp import web

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # `python demo/run.py` from anywhere

from boshd.cli import setup_logging  # noqa: E402
from boshd.config import Config, parse_config  # noqa: E402
from tests.support.boshclient import BoshClient  # noqa: E402
from tests.support.boshd import BoshdServer  # noqa: E402
from tests.support.prosody import PrivateProsody  # noqa: E402
from tests.support.stanzas import (  # noqa: E402
    NS_CLIENT,
    NS_STANZA_ERRORS,
    Element,
    XmppError,
    message,
    message_body,
    presence,
    qname,
)

NS_ROSTER = "jabber:iq:roster"
STATIC = ROOT / "demo" / "static"
STROPHE_DIST = ROOT / "tests" / "e2e" / "browser" / "node_modules" / "strophe.js" / "dist"
DOMAIN = "localhost"
USERS = {"demo1": "demo1-pw", "echo": "echo-pw"}
HOST = "127.0.0.1"

log = logging.getLogger("demo")


# ------------------------------------------------------------------------------ the echo bot


class EchoBot:
    """``echo@localhost/bot`` over BOSH through boshd: every chat message comes back unchanged."""

    def __init__(self, bosh_url: str, user: str, password: str) -> None:
        self.bosh_url = bosh_url
        self.user = user
        self.password = password
        self.jid = ""
        self._client: BoshClient | None = None
        self._ready = asyncio.Event()
        self._stopping = False

    async def ready(self) -> None:
        await self._ready.wait()

    async def run(self) -> None:
        """Log in and answer; after a lost session, log in again (a fresh BOSH session)."""
        while not self._stopping:
            client = BoshClient(self.bosh_url, DOMAIN, wait=60)
            self._client = client
            try:
                self.jid = await client.login(
                    self.user, self.password, resource="bot", send_presence=True
                )
                log.info("echo bot online as %s (BOSH sid %s)", self.jid, client.sid)
                self._ready.set()
                while True:
                    with contextlib.suppress(TimeoutError):  # quiet for an hour: keep waiting
                        await self._handle(client, await client.recv(timeout=3600))
            except XmppError as exc:
                if self._stopping:
                    return
                log.warning("echo bot: session lost (%s); logging in again in 2 s", exc)
                await asyncio.sleep(2)
            finally:
                with contextlib.suppress(Exception):
                    await client.close()

    async def _handle(self, client: BoshClient, el: Element) -> None:
        sender = el.get("from")
        if not sender:
            return
        if el.tag == qname(NS_CLIENT, "message") and el.get("type", "normal") in ("chat", "normal"):
            body = message_body(el)
            if body is not None:
                await client.send(message(sender, body))
        elif el.tag == qname(NS_CLIENT, "presence") and el.get("type") == "subscribe":
            # Accept, and ask back, so the bot shows up online in the person's roster.
            await client.send(presence(to=sender, ptype="subscribed"))
            await client.send(presence(to=sender, ptype="subscribe"))
        elif el.tag == qname(NS_CLIENT, "iq") and el.get("type") in ("get", "set"):
            head = (
                f"<iq xmlns='{NS_CLIENT}' to={quoteattr(sender)} id={quoteattr(el.get('id', ''))}"
            )
            if el.find(qname(NS_ROSTER, "query")) is not None and el.get("type") == "set":
                await client.send(f"{head} type='result'/>")  # a roster push (RFC 6121 2.1.6)
            else:
                await client.send(
                    f"{head} type='error'><error type='cancel'>"
                    f"<service-unavailable xmlns='{NS_STANZA_ERRORS}'/></error></iq>"
                )

    async def stop(self) -> None:
        """Sign off: terminate the BOSH session (unavailable presence), then stop."""
        self._stopping = True
        client, self._client = self._client, None
        if client is not None and client.active:
            with contextlib.suppress(Exception):
                await client.terminate(timeout=2.0)


# ------------------------------------------------------------------------------ the web page


def page_app(settings: dict[str, Any]) -> web.Application:
    """The demo page, its settings (``/config.json``) and StropheJS (``/vendor/strophe.js/``)."""

    async def config_json(_request: web.Request) -> web.Response:
        return web.json_response(settings, headers={"Cache-Control": "no-store"})

    async def index(_request: web.Request) -> web.FileResponse:
        return web.FileResponse(STATIC / "index.html")

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/config.json", config_json)
    app.router.add_static("/vendor/strophe.js", STROPHE_DIST)
    app.router.add_static("/static", STATIC)
    return app


def boshd_settings(port: int, page_origin: str, prosody: PrivateProsody) -> Config:
    return parse_config(
        {
            "server": {"listen": [f"{HOST}:{port}"], "graceful_timeout": "3s"},
            "log": {"level": "info"},
            "cors": {"allowed_origins": [page_origin]},
            "upstream": {
                "connect_timeout": "5s",
                "domains": {
                    DOMAIN: {"host": HOST, "port": prosody.c2s_port, "tls": "plain"},
                },
            },
        },
        source="demo/run.py",
    )


# ------------------------------------------------------------------------------ main


async def serve(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    workdir = tempfile.TemporaryDirectory(prefix="boshd-demo-")
    prosody = PrivateProsody(workdir=Path(workdir.name) / "prosody")
    runner: web.AppRunner | None = None
    boshd: BoshdServer | None = None
    bot: EchoBot | None = None
    bot_task: asyncio.Task[None] | None = None
    try:
        for user, password in USERS.items():
            prosody.register(user, password)
        await asyncio.to_thread(prosody.start)
        log.info("prosody: c2s on %s:%d (log %s)", HOST, prosody.c2s_port, prosody.log_path)

        # The page server first: boshd's CORS allow-list needs its origin.
        settings: dict[str, Any] = {"domain": DOMAIN, "echo": f"echo@{DOMAIN}"}
        runner = web.AppRunner(page_app(settings), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, HOST, args.web_port)
        await site.start()
        web_port = next(a[1] for a in runner.addresses if isinstance(a, tuple))
        page_origin = f"http://{HOST}:{web_port}"

        config = boshd_settings(args.boshd_port, page_origin, prosody)
        setup_logging(config)
        boshd = await BoshdServer.start(config, DOMAIN)
        settings.update(
            bosh=f"http://{HOST}:{boshd.port}/http-bind",
            websocket=f"ws://{HOST}:{boshd.port}/xmpp-websocket",
            user=f"demo1@{DOMAIN}",
            password=USERS["demo1"],
        )

        bot = EchoBot(settings["bosh"], "echo", USERS["echo"])
        bot_task = asyncio.create_task(bot.run(), name="echo-bot")
        async with asyncio.timeout(15):
            await bot.ready()

        print(
            "\n"
            f"  boshd demo is running.  Open  {page_origin}/  in a browser\n"
            f"  and log in as demo1@{DOMAIN} / {USERS['demo1']} (pre-filled),\n"
            f"  then chat with echo@{DOMAIN}: it answers every message with the same text.\n"
            f"  BOSH:      {settings['bosh']}\n"
            f"  WebSocket: {settings['websocket']}\n"
            "  Ctrl-C stops everything.\n",
            flush=True,
        )
        await stop.wait()
        log.info("stopping")
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if bot is not None:
            await bot.stop()
        if bot_task is not None:
            bot_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await bot_task
        if boshd is not None:
            await boshd.stop()  # drains: browser sessions get system-shutdown
        if runner is not None:
            await runner.cleanup()
        await asyncio.to_thread(prosody.stop)
        workdir.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--web-port", type=int, default=0, help="port of the demo page (default: any free)"
    )
    parser.add_argument(
        "--boshd-port", type=int, default=0, help="boshd's port (default: any free)"
    )
    args = parser.parse_args(argv)
    if not (STROPHE_DIST / "strophe.esm.js").is_file():
        print(
            f"StropheJS is missing ({STROPHE_DIST}): run `npm ci --prefix tests/e2e/browser`",
            file=sys.stderr,
        )
        return 1
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
