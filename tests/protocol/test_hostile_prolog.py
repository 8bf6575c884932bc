"""Issue 13, finding 1, over the wire: no request or WebSocket message can make boshd open a
file or freeze, whatever hides its DOCTYPE, and a bystander BOSH and WebSocket session keep
talking throughout (the arena's witnesses from test_bad_input).

The reported request put ``<!--<![CDATA[-->`` in front of an external parameter entity naming
``/dev/zero``: boshd read it forever on the event loop. Here the entity names a FIFO canary,
which a parser that opened it would block on until the watcher thread noticed.
"""

from __future__ import annotations

import asyncio
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from boshd.wire.parser import refused_loads
from tests.protocol.conftest import BOSH_NS, DOMAIN, XBOSH_NS
from tests.protocol.test_bad_input import (
    EXAMPLE_TIMEOUT,
    FUZZ,
    Arena,
    check_ws_outcome,
    post,
    refused_with,
    ws_attempt,
    ws_refused,
)
from tests.protocol.wskit import OP_TEXT
from tests.support.canary import FifoCanary
from tests.support.hostile_xml import HIDERS, documents, dtds

pytestmark = pytest.mark.timeout(180)


STANZA = f"<message to='bob@{DOMAIN}' id='h1'><body>&e;</body></message>"


def issue_request(url: str, hider: str, kind: str, sid: str, rid: int) -> bytes:
    """The reported request shape: prolog text, a DOCTYPE naming ``url``, then a body."""
    if sid:
        root = f"<body xmlns='{BOSH_NS}' rid='{rid}' sid='{sid}'>{STANZA}</body>"
    else:
        root = (
            f"<body xmlns='{BOSH_NS}' xmlns:xmpp='{XBOSH_NS}' rid='{rid}' to='{DOMAIN}' "
            f"wait='4' hold='1' ver='1.6' xmpp:version='1.0'/>"
        )
    return (HIDERS[hider] + dtds(url)[kind] + root).encode()


async def healthy(arena: Arena) -> None:
    """The daemon still answers plain HTTP at once."""
    async with asyncio.timeout(2), arena.client.get("/healthz") as resp:
        assert resp.status == 200


@pytest.mark.parametrize("live", [False, True], ids=["creation", "live-sid"])
@pytest.mark.parametrize("kind", ["parameter-entity", "external-subset", "general-entity"])
@pytest.mark.parametrize("hider", sorted(HIDERS))
async def test_bosh_doctype_behind_any_prolog_never_loads(
    arena: Arena, hider: str, kind: str, live: bool
) -> None:
    """A BOSH body with a DOCTYPE behind a comment, PI, declaration or whitespace holding
    '<![CDATA[' is bad-request within a second; the named file is never opened, no load is
    even attempted, the session (if any) ends with nothing forwarded, and the bystanders and
    /healthz keep answering (issue 13 finding 1, B-WRAP-06, C-XML-01)."""
    with FifoCanary() as canary:
        before = refused_loads()
        await refused_with(
            arena,
            lambda sid, rid: issue_request(canary.url, hider, kind, sid, rid),
            "bad-request",
            live=live,
        )
        assert not canary.opened
        assert refused_loads() == before
        await healthy(arena)


@pytest.mark.parametrize("pre_open", [False, True], ids=["first-message", "open-stream"])
@pytest.mark.parametrize("kind", ["parameter-entity", "external-subset", "general-entity"])
@pytest.mark.parametrize("hider", sorted(h for h in HIDERS if HIDERS[h].startswith("<")))
async def test_websocket_doctype_behind_any_prolog_never_loads(
    arena: Arena, hider: str, kind: str, pre_open: bool
) -> None:
    """The same over WebSocket: <restricted-xml/>, close, nothing opened or asked for,
    bystanders unaffected (issue 13 finding 1, C-XML-01, W-ERR-03)."""
    with FifoCanary() as canary:
        before = refused_loads()
        frame = (HIDERS[hider] + dtds(canary.url)[kind] + STANZA).encode()
        await ws_refused(arena, frame, pre_open=pre_open, condition="restricted-xml")
        assert not canary.opened
        assert refused_loads() == before
        await healthy(arena)


@pytest.mark.parametrize("transport", ["bosh", "websocket"])
async def test_errors_do_not_reveal_which_files_exist(arena: Arena, transport: str) -> None:
    """An entity naming an existing file, a missing one or a FIFO gets the same answer, so
    the condition is no oracle for the server's file system (issue 13 finding 1, C-XML-01)."""
    with FifoCanary() as canary:
        answers = []
        for url in (canary.secret_url, canary.missing_url, canary.url, "file:///etc/shadow"):
            if transport == "bosh":
                data = issue_request(url, "comment-holding-cdata", "parameter-entity", "", 1)
                answer = await post(arena.client, data)
                answers.append((answer.status, answer.type, answer.condition))
            else:
                frame = (HIDERS["comment-holding-cdata"] + dtds(url)["parameter-entity"]).encode()
                texts = await ws_refused(arena, frame + STANZA.encode(), pre_open=True)
                answers.append(tuple(texts))
        assert len(set(answers)) == 1, answers
        assert not canary.opened


# ----------------------------------------------------------------------- generated documents


async def bosh_try(arena: Arena, data: bytes) -> None:
    """One generated body as a creation request: answered at once; a session it created is
    ended again."""
    async with asyncio.timeout(EXAMPLE_TIMEOUT):
        answer = await post(arena.client, data)
    if answer.sid:
        await arena.end_session(answer.sid)


async def ws_try(arena: Arena, data: bytes) -> None:
    """One generated message on an open stream: either taken (a following ping still reaches
    the server) or the stream ends with one stream error; never silence."""
    since = len(arena.fake.connections)
    frames, close, accepted = await ws_attempt(
        arena, OP_TEXT, data, pre_open=True, tag=f"hostile-{arena.examples}"
    )
    check_ws_outcome(frames, close, accepted=accepted)
    await arena.upstream_closed(arena.fake.connections[since:])


def _stanza_root(note: str, content: str) -> str:
    return f"<message xmlns='jabber:client' to='bob@{DOMAIN}' note='{note}'>{content}</message>"


def _bosh_root(note: str, content: str) -> str:
    return (
        f"<body xmlns='{BOSH_NS}' xmlns:xmpp='{XBOSH_NS}' rid='1' to='{DOMAIN}' wait='4' "
        f"hold='1' ver='1.6' xmpp:version='1.0' note='{note}'>{content}</body>"
    )


@FUZZ
@given(data=st.data())
async def test_generated_hostile_documents_through_both_transports(
    fuzz_arena: Arena, data: st.DataObject
) -> None:
    """Generated documents (comments, PIs, CDATA and attribute values holding the trigger
    texts, every kind of DOCTYPE naming a FIFO canary) sent as BOSH bodies and as WebSocket
    messages are answered at once, never open the canary or attempt a load, and the
    bystander sessions keep talking (issue 13 finding 1, C-XML-01, B-WRAP-06, W-ERR-03;
    BOSHD_FUZZ_EXAMPLES raises the budget)."""
    with FifoCanary() as canary:
        before = refused_loads()
        bosh_doc, _ = data.draw(documents(canary.url, _bosh_root), label="bosh")
        ws_doc, _ = data.draw(documents(canary.url, _stanza_root, bom=False), label="ws")
        await bosh_try(fuzz_arena, bosh_doc.encode())
        await ws_try(fuzz_arena, ws_doc.encode())
        assert not canary.opened
        assert refused_loads() == before
    await fuzz_arena.tick()


def test_fuzz_budget_comes_from_the_environment() -> None:
    """The generated test runs BOSHD_FUZZ_EXAMPLES examples (default 150), so a longer run
    is one variable away (issue 13 acceptance)."""
    assert FUZZ.max_examples == int(os.environ.get("BOSHD_FUZZ_EXAMPLES", "150"))
