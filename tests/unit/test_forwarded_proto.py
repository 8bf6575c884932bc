"""What a trusted proxy says about the client's scheme (``proxied_secure``), the one notion of
"was this request secure" behind B-HTTP-14 on both BOSH fronts (issue 13 finding 7): generated
X-Forwarded-Proto and RFC 7239 Forwarded headers, as proxies write them and as a client would
forge them ahead of the proxy's own."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from multidict import CIMultiDict, CIMultiDictProxy

from boshd.frontend.state import proxied_secure

SECURE = ("https", "wss")
PROTOS = st.sampled_from(["https", "wss", "http", "ws", "", "htps", "https2", "ftp"])


def cased(text: str) -> st.SearchStrategy[str]:
    return st.lists(st.booleans(), min_size=len(text), max_size=len(text)).map(
        lambda upper: "".join(c.upper() if u else c for c, u in zip(text, upper, strict=True))
    )


@st.composite
def forwarded_element(draw: st.DrawFn) -> tuple[str, str]:
    """One Forwarded element and the proto it carries ("" if none)."""
    client = draw(st.sampled_from(["192.0.2.1", '"[2001:db8::1]:80"', "unknown"]))
    pairs = [f"for={client}"]
    proto = draw(st.one_of(st.none(), PROTOS))
    if proto is not None:
        value = draw(cased(proto))
        pairs.append(f'proto="{value}"' if draw(st.booleans()) else f"proto={value}")
    if draw(st.booleans()):
        pairs.append("by=203.0.113.43")
    order = draw(st.permutations(pairs))
    return draw(st.sampled_from([";", "; ", " ;"])).join(order), (proto or "")


@st.composite
def headers(draw: st.DrawFn) -> tuple[CIMultiDictProxy[str], list[str]]:
    """Header lines as a chain of proxies (or a forging client) might leave them, and every
    proto value in them, in order."""
    fields: CIMultiDict[str] = CIMultiDict()
    protos: list[str] = []
    for _ in range(draw(st.integers(0, 3))):
        if draw(st.booleans()):
            items = draw(st.lists(PROTOS, min_size=1, max_size=3))
            spelled = [draw(cased(item)) for item in items]
            fields.add("X-Forwarded-Proto", draw(st.sampled_from([",", ", "])).join(spelled))
            protos += items
        else:
            elements = draw(st.lists(forwarded_element(), min_size=1, max_size=3))
            fields.add("Forwarded", ", ".join(text for text, _ in elements))
            protos += [proto for _, proto in elements]
    return CIMultiDictProxy(fields), protos


@settings(max_examples=300, deadline=None)
@given(generated=headers())
def test_secure_only_when_every_proto_every_hop_reports_is_https(
    generated: tuple[CIMultiDictProxy[str], list[str]],
) -> None:
    """A request counts as TLS only if there is at least one proto value and every
    X-Forwarded-Proto item and every Forwarded element says https (or wss): a client's own
    https ahead of a proxy's http, an element without proto, or no header leaves it plain
    (B-HTTP-14, issue 13 finding 7)."""
    fields, protos = generated
    expected = bool(protos) and all(p in SECURE for p in protos)
    assert proxied_secure(fields) is expected, (list(fields.items()), protos)


@settings(max_examples=300, deadline=None)
@given(
    junk=st.text(alphabet=st.characters(codec="latin-1"), max_size=40).filter(
        lambda text: "proto" not in text.lower()
    )
)
def test_forwarded_element_without_a_proto_is_never_secure(junk: str) -> None:
    """A Forwarded element after proto=https that has no proto of its own, or is not RFC 7239
    syntax at all, makes the request plain, and nothing raises (issue 13 finding 7)."""
    fields = CIMultiDict([("X-Forwarded-Proto", "https"), ("Forwarded", f"proto=https, {junk}")])
    assert proxied_secure(CIMultiDictProxy(fields)) is False
    alone = CIMultiDictProxy(CIMultiDict([("Forwarded", junk)]))
    assert isinstance(proxied_secure(alone), bool)
