"""A stream restart stays with the session's domain (issue 13 finding 10): over BOSH
(XEP-0206 restart with 'to') and WebSocket (a new <open to=...>), a restart naming any other
domain ends the session with host-unknown and sends no new header upstream; naming the
session's domain (in any letter case) or none restarts as before (X-RST-05, W-RST-01)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from boshd.core.conditions import Condition
from boshd.core.events import (
    CloseUpstream,
    RestartUpstream,
    SendFrame,
    ServerStreamInfo,
    SessionEnded,
    UpstreamOpened,
    WsOpen,
)
from boshd.core.framing import WsSession
from tests.unit.corekit import Harness

SESSION_DOMAIN = "example.com"

#: Domains an attacker would name in a restart: another served or unserved domain, the same
#: name with a trailing dot, padding or another Unicode spelling, an address, a subdomain.
OTHER_DOMAINS = [
    "other.example",
    "example.org",
    "example.com.",
    " example.com",
    "example.com ",
    "sub.example.com",
    "localhost",
    "127.0.0.1",
    "[::1]",
    "exampl\u0435.com",  # a Cyrillic letter ie for the last 'e'
    "example.com\x00",
]

domain_labels = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", fullmatch=True)
generated_domains = st.one_of(
    st.sampled_from(OTHER_DOMAINS),
    st.lists(domain_labels, min_size=1, max_size=4).map(".".join),
    st.text(min_size=1, max_size=30),
).filter(lambda d: d.lower() != SESSION_DOMAIN)


def same_domain_spellings() -> st.SearchStrategy[str | None]:
    """The session's domain in any letter case, or no 'to' at all."""
    cased = st.lists(st.booleans(), min_size=len(SESSION_DOMAIN), max_size=len(SESSION_DOMAIN))
    return st.one_of(
        st.none(),
        st.just(""),
        cased.map(
            lambda up: "".join(
                c.upper() if u else c for c, u in zip(SESSION_DOMAIN, up, strict=True)
            )
        ),
    )


def test_bosh_restart_to_another_domain_is_host_unknown() -> None:
    """A BOSH restart naming a domain other than the session's is answered terminate
    host-unknown, no new header goes upstream, the upstream stream is closed and the session
    ends (B-SREQ-04 applied to X-RST-05, issue 13 finding 10)."""
    h = Harness()
    t = h.request(restart=True, to="other.example")
    assert h.of(RestartUpstream) == []
    body = h.answer(t).body
    assert (body.type, body.condition) == ("terminate", Condition.HOST_UNKNOWN)
    assert h.of(CloseUpstream)
    ended = h.ended()
    assert ended is not None
    assert ended.condition is Condition.HOST_UNKNOWN


@settings(max_examples=200, deadline=None)
@given(to=generated_domains)
def test_bosh_restart_never_leaves_the_session_domain(to: str) -> None:
    """Whatever other domain a BOSH restart names, no restart header carries it upstream and
    the session ends host-unknown (issue 13 finding 10)."""
    h = Harness()
    t = h.request(restart=True, to=to)
    assert h.of(RestartUpstream) == []
    assert h.answer(t).body.condition is Condition.HOST_UNKNOWN


@settings(max_examples=100, deadline=None)
@given(to=same_domain_spellings())
def test_bosh_restart_with_the_session_domain_or_none_restarts(to: str | None) -> None:
    """A BOSH restart naming the session's domain in any case, or no domain, restarts the
    stream as before (X-RST-05, issue 13 finding 10)."""
    h = Harness()
    h.request(restart=True, to=to)
    restarts = h.of(RestartUpstream)
    assert len(restarts) == 1
    assert restarts[0].header.to.lower() == SESSION_DOMAIN
    assert h.ended() is None


def _opened_ws() -> WsSession:
    ws = WsSession("s", 0.0)
    ws.receive(WsOpen(to=SESSION_DOMAIN, version="1.0"), 0.0)
    ws.upstream(UpstreamOpened(ServerStreamInfo("i", SESSION_DOMAIN, "1.0")), 0.0)
    ws.take_actions()
    return ws


@settings(max_examples=200, deadline=None)
@given(to=generated_domains)
def test_websocket_restart_never_leaves_the_session_domain(to: str) -> None:
    """A WebSocket <open/> restart naming another domain gets a new <open/> (not in that
    domain's name), a host-unknown stream error and <close/>; nothing restarts upstream and
    the session ends (W-OPEN-11 applied to W-RST-01, issue 13 finding 10)."""
    ws = _opened_ws()
    ws.receive(WsOpen(to=to, version="1.0"), 1.0)
    actions = ws.take_actions()
    assert not [a for a in actions if isinstance(a, RestartUpstream)]
    frames = [a.data for a in actions if isinstance(a, SendFrame)]
    assert frames[0].startswith(b"<open ")
    assert to.encode() not in frames[0].split(b"from=")[1].split(b" ")[0]
    assert b"host-unknown" in frames[1]
    assert frames[2].startswith(b"<close")
    assert [a for a in actions if isinstance(a, CloseUpstream)]
    ended = [a for a in actions if isinstance(a, SessionEnded)]
    assert [e.condition for e in ended] == [Condition.HOST_UNKNOWN]
    assert ws.closed


@settings(max_examples=100, deadline=None)
@given(to=same_domain_spellings())
def test_websocket_restart_with_the_session_domain_restarts(to: str | None) -> None:
    """A WebSocket restart naming the session's domain in any case (or none) restarts the
    stream on the same connection (W-RST-01, issue 13 finding 10)."""
    ws = _opened_ws()
    ws.receive(WsOpen(to=to, version="1.0"), 1.0)
    actions = ws.take_actions()
    restarts = [a for a in actions if isinstance(a, RestartUpstream)]
    assert len(restarts) == 1
    assert restarts[0].header.to.lower() == SESSION_DOMAIN
    assert not ws.closed
