"""A tiny harness that drives the pure BOSH core by hand with a fake clock."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from boshd.core.bosh import BoshSession
from boshd.core.events import (
    Action,
    BoshRequest,
    CloseUpstream,
    ConnectUpstream,
    CreateRequest,
    Respond,
    RestartUpstream,
    SendUpstream,
    ServerStreamInfo,
    SessionEnded,
    Stanza,
    UpstreamOpened,
    UpstreamStanzas,
)
from boshd.core.params import BoshLimits, negotiate

STREAMS = "http://etherx.jabber.org/streams"
FEATURES = Stanza(
    b"<stream:features xmlns:stream='http://etherx.jabber.org/streams'>"
    b"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism>"
    b"</mechanisms></stream:features>",
    "features",
    STREAMS,
)
CREATION_RID = 1000


def message(n: int, **attrs: Any) -> Stanza:
    data = f"<message xmlns='jabber:client' id='m{n}'><body>{n}</body></message>".encode()
    return Stanza(data, "message", "jabber:client", id=f"m{n}", **attrs)


class Harness:
    """Holds a session, the fake clock, and every action it produced."""

    def __init__(
        self,
        *,
        ver: str | None = "1.6",
        wait: int = 60,
        hold: int = 1,
        ack: int | None = None,
        newkey: str | None = None,
        open_upstream: bool = True,
        **limits: Any,
    ) -> None:
        self.now = 0.0
        self.limits = BoshLimits(**limits)
        create = CreateRequest(
            token=1,
            rid=CREATION_RID,
            to="example.com",
            ver=ver,
            wait=wait,
            hold=hold,
            ack=ack,
            newkey=newkey,
            lang="en",
        )
        params = negotiate(create, self.limits)
        self.session = BoshSession("sid-1", create, params, self.limits, self.now)
        self.actions: list[Action] = []
        self.abandoned: set[int] = set()  # tokens the test declared gone
        self.next_token = 2
        self.next_rid = CREATION_RID + 1
        self._collect()
        if open_upstream:
            self.upstream(UpstreamOpened(ServerStreamInfo("stream-1", "example.com", "1.0")))
            self.upstream(UpstreamStanzas((FEATURES,)))

    # -- driving -------------------------------------------------------------------------

    def _collect(self) -> list[Action]:
        new = self.session.take_actions()
        self.actions.extend(new)
        return new

    def request(self, rid: int | None = None, **kw: Any) -> int:
        """Send a request; returns its token."""
        if rid is None:
            rid = self.next_rid
        self.next_rid = max(self.next_rid, rid + 1)
        token = self.next_token
        self.next_token += 1
        self.session.receive(BoshRequest(token=token, rid=rid, **kw), self.now)
        self._collect()
        return token

    def upstream(self, event: Any) -> list[Action]:
        self.session.upstream(event, self.now)
        return self._collect()

    def advance(self, seconds: float) -> list[Action]:
        """Move the fake clock, firing the core's timer whenever it is due."""
        target = self.now + seconds
        fired: list[Action] = []
        while True:
            deadline = self.session.next_deadline()
            if deadline is None or deadline > target:
                break
            self.now = max(self.now, deadline)
            self.session.handle_timer(self.now)
            fired.extend(self._collect())
        self.now = target
        return fired

    # -- observing -----------------------------------------------------------------------

    def answers(self, token: int) -> list[Respond]:
        return [a for a in self.actions if isinstance(a, Respond) and a.token == token]

    def answer(self, token: int) -> Respond:
        found = self.answers(token)
        assert len(found) == 1, f"token {token} answered {len(found)} times: {found}"
        return found[0]

    def answered(self, token: int) -> bool:
        return bool(self.answers(token))

    def sent_upstream(self) -> list[bytes]:
        return [d for a in self.actions if isinstance(a, SendUpstream) for d in a.data]

    def of(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]

    def ended(self) -> SessionEnded | None:
        ends = self.of(SessionEnded)
        assert len(ends) <= 1
        return ends[0] if ends else None


def attrs(respond: Respond) -> dict[str, str]:
    return dict(respond.body.attrs)


__all__ = [
    "CREATION_RID",
    "FEATURES",
    "CloseUpstream",
    "ConnectUpstream",
    "Harness",
    "RestartUpstream",
    "attrs",
    "message",
    "replace",
]
