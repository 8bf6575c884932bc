"""``make demo`` works: ``demo/run.py`` as a subprocess, its page driven in Chromium like a person
would (log in, chat with the echo bot over BOSH, then over WebSocket), and Ctrl-C (SIGINT)
stops everything it started: exit status 0, its Prosody gone, its temporary directory removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Page, expect

from tests.e2e.browser.conftest import PROJECT_ROOT, PageLog

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.asyncio(loop_scope="session"),
    pytest.mark.timeout(60),
]

DEMO = PROJECT_ROOT / "demo" / "run.py"
URL_LINE = re.compile(r"Open\s+(http://127\.0\.0\.1:\d+/)\s+in a browser")
PROSODY_LOG = re.compile(r"\(log (/\S+)/prosody/prosody\.log\)")


@dataclass
class Demo:
    proc: asyncio.subprocess.Process
    output: list[str] = field(default_factory=list)
    url: str = ""
    workdir: Path | None = None
    _reader: asyncio.Task[None] | None = None

    def text(self) -> str:
        return "".join(self.output)


async def _read(demo: Demo, started: asyncio.Event) -> None:
    assert demo.proc.stdout is not None
    while line := (await demo.proc.stdout.readline()).decode("utf-8", "replace"):
        demo.output.append(line)
        if m := PROSODY_LOG.search(line):
            demo.workdir = Path(m.group(1))
        if m := URL_LINE.search(line):
            demo.url = m.group(1)
            started.set()
    started.set()  # exited: let the waiter look at the output


@pytest_asyncio.fixture(loop_scope="session")
async def demo() -> AsyncIterator[Demo]:
    """``demo/run.py`` running, its page URL read from what it prints."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(DEMO),
        cwd=PROJECT_ROOT,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    running = Demo(proc)
    started = asyncio.Event()
    running._reader = asyncio.create_task(_read(running, started))
    try:
        async with asyncio.timeout(20):
            await started.wait()
        assert running.url, f"demo did not print its URL:\n{running.text()}"
        yield running
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGKILL)
            await proc.wait()
        with contextlib.suppress(asyncio.CancelledError):
            await running._reader


async def chat_with_echo(page: Page, transport: str) -> None:
    await page.check(f"input[name=transport][value={transport}]")
    await page.click("#connect")
    status = page.locator("#status")
    await expect(status).to_have_attribute("data-state", "online", timeout=10000)
    await expect(status).to_contain_text(f"({transport})")
    await page.fill("#text", f"ping over {transport}")
    await page.press("#text", "Enter")
    echoed = page.locator("#messages li.in", has_text=f"echo@localhost: ping over {transport}")
    await expect(echoed).to_be_visible(timeout=5000)
    await page.click("#disconnect")
    await expect(status).to_have_attribute("data-state", "offline", timeout=10000)


async def test_demo_page_chats_with_the_echo_bot_and_ctrl_c_stops_everything(
    demo: Demo, page: Page, page_log: PageLog
) -> None:
    """make demo: echo bot over BOSH and WebSocket; SIGINT stops all (G-CORS-01, G-SHUT-01)."""
    # make demo: a person logs in on the demo page and the echo bot (a BOSH client through boshd)
    # answers over BOSH and over WebSocket; SIGINT ends the demo cleanly with Prosody stopped and
    # its files removed (G-CORS-01, G-ORIG-01, G-SHUT-01).
    await page.goto(demo.url)
    await expect(page.locator("#jid")).to_have_value("demo1@localhost")
    await chat_with_echo(page, "bosh")
    await chat_with_echo(page, "websocket")
    assert page_log.errors() == []
    assert page_log.foreign_requests == []

    demo.proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(15):
        code = await demo.proc.wait()
    assert code == 0, demo.text()
    assert demo._reader is not None
    await demo._reader
    assert "boshd stopped" in demo.text()
    assert "Traceback" not in demo.text(), demo.text()
    assert demo.workdir is not None
    assert not demo.workdir.exists(), f"{demo.workdir} left behind"
    assert not _processes_mentioning(str(demo.workdir)), "a demo process is still running"


def _processes_mentioning(text: str) -> list[int]:
    """Pids whose command line contains `text` (the demo's Prosody has its config path there)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            if text.encode() in (entry / "cmdline").read_bytes():
                found.append(int(entry.name))
    return found
