"""The empty-poll shortcut (boshd.wire.body.empty_request) against the full path."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from boshd.core.errors import BadRequest
from boshd.core.events import BoshRequest
from boshd.wire.body import empty_request, is_creation, read_request
from boshd.wire.parser import parse_body
from boshd.wire.schema import default_body_schema

NS = "http://jabber.org/protocol/httpbind"

RIDS = st.sampled_from(
    [
        "1",
        "42",
        "999999999999999",
        "9007199254740991",
        "9007199254740992",
        "0",
        "012",
        "+5",
        "-1",
        "1.0",
        " 7",
        "x",
        "",
    ]
)
SIDS = st.sampled_from(["abc", "S0m3-sid_x", "a b", "é", "", "x" * 65, "a&amp;b", "a>b"])
XMLNS = st.sampled_from([NS, NS + "/", "jabber:client", ""])
EXTRA = st.sampled_from(
    [
        "",
        " ack='1'",
        " type='terminate'",
        " pause='3'",
        " rid='5'",
        " key='k'",
        " xmlns:xmpp='urn:xmpp:xbosh' xmpp:restart='true'",
        " xml:lang='en'",
    ]
)
ENDS = st.sampled_from(["/>", "></body>", " />", "> </body>", "><message/></body>", ">x</body>"])
SPACES = st.sampled_from([" ", "  ", "\t", "\n", "\r\n "])


def full_path(data: bytes) -> tuple[str, BoshRequest] | None:
    """What parse_body + the schema + read_request make of ``data`` (None: refused)."""
    try:
        root = parse_body(data, max_bytes=1 << 16)
        default_body_schema().check(root)
        if is_creation(root):
            return None
        return root.get("sid", ""), read_request(root, 1)
    except (BadRequest, ValueError):
        return None


@settings(max_examples=400, deadline=None)
@given(
    rid=RIDS,
    sid=SIDS,
    xmlns=XMLNS,
    extra=EXTRA,
    end=ENDS,
    order=st.permutations([0, 1, 2]),
    quote=st.sampled_from(["'", '"']),
    space=SPACES,
)
def test_shortcut_agrees_with_the_full_path(
    rid: str, sid: str, xmlns: str, extra: str, end: str, order: list[int], quote: str, space: str
) -> None:
    """Whatever the shortcut recognises, the full path accepts with the same sid, rid and an
    otherwise empty request (B-WRAP-01, B-RID-01)."""
    attrs = [f"rid={quote}{rid}{quote}", f"sid={quote}{sid}{quote}", f"xmlns={quote}{xmlns}{quote}"]
    data = ("<body" + "".join(space + attrs[i] for i in order) + extra + end).encode()
    quick = empty_request(data)
    if quick is None:
        return
    full = full_path(data)
    assert full is not None, data
    assert full == (quick[0], BoshRequest(1, quick[1])), data


VALID_RID = st.integers(1, 10**15 - 1).map(str)
VALID_SID = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)


@settings(max_examples=300, deadline=None)
@given(
    rid=VALID_RID,
    sid=VALID_SID,
    order=st.permutations([0, 1, 2]),
    quote=st.sampled_from(["'", '"']),
    space=SPACES,
    tail=st.sampled_from(["", " ", "\n", "\t "]),
    end=st.sampled_from(["/>", "></body>"]),
)
def test_plain_polls_are_recognised_exactly(
    rid: str, sid: str, order: list[int], quote: str, space: str, tail: str, end: str
) -> None:
    """Every poll in the plain form is taken by the shortcut, with the sid and rid the full
    path reads from it (B-WRAP-01, B-RID-01)."""
    attrs = [f"rid={quote}{rid}{quote}", f"sid={quote}{sid}{quote}", f"xmlns={quote}{NS}{quote}"]
    data = ("<body" + "".join(space + attrs[i] for i in order) + tail + end).encode()
    assert empty_request(data) == (sid, int(rid))
    assert full_path(data) == (sid, BoshRequest(1, int(rid)))


def test_the_usual_polls_are_recognised() -> None:
    """StropheJS's self-closing poll and the open/close form are taken by the shortcut
    (B-WRAP-01)."""
    strophe = f"<body rid='2893' xmlns='{NS}' sid='Ab-9_z'/>".encode()
    bench = f"<body rid='2894' sid='Ab-9_z' xmlns='{NS}'></body>".encode()
    assert empty_request(strophe) == ("Ab-9_z", 2893)
    assert empty_request(bench) == ("Ab-9_z", 2894)
    assert full_path(strophe) == ("Ab-9_z", BoshRequest(1, 2893))
