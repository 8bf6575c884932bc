"""Hostile XML for tests of issue 13 finding 1: every way to hide or phrase a DOCTYPE that
points at a resource, and a hypothesis strategy that mixes them with the texts that fooled
byte scanners before."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st

BOSH_NS = "http://jabber.org/protocol/httpbind"

#: Text in front of the DOCTYPE: what fooled the old byte scan, and what might fool a new one.
HIDERS = {
    "comment-holding-cdata": "<!--<![CDATA[-->",
    "pi-holding-cdata": "<?x <![CDATA[ ?>",
    "declaration-then-comment": "<?xml version='1.0'?><!-- <![CDATA[ -->",
    "declaration": "<?xml version='1.0' encoding='UTF-8'?>",
    "whitespace": " \n\t\r",
    "nothing": "",
}


def dtds(url: str) -> dict[str, str]:
    """Every way a DOCTYPE can point at a resource."""
    return {
        "parameter-entity": f"<!DOCTYPE body [<!ENTITY % p SYSTEM '{url}'> %p;]>",
        "general-entity": f"<!DOCTYPE body [<!ENTITY e SYSTEM '{url}'>]>",
        "external-subset": f"<!DOCTYPE body SYSTEM '{url}'>",
        "public-id": f"<!DOCTYPE body PUBLIC '-//boshd//test//EN' '{url}'>",
        "nested-parameter-entities": (
            f"<!DOCTYPE body [<!ENTITY % a '&#60;!ENTITY &#37; b SYSTEM \"{url}\">'> %a; %b;]>"
        ),
    }


TRIGGERS = ["<![CDATA[", "<!DOCTYPE", "]]>", "-->", "<!--", "?>", "<?", "%p;", "&e;", "'", '"']


def escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("'", "&apos;")


def bosh_root(note: str, content: str) -> str:
    return f"<body xmlns='{BOSH_NS}' rid='1' note='{note}'>{content}</body>"


def documents(
    url: str, root: Callable[[str, str], str] = bosh_root, *, bom: bool = True
) -> st.SearchStrategy[tuple[str, bool]]:
    """(document, whether its prolog holds a DOCTYPE), built from hostile pieces: comments,
    PIs, CDATA and attribute values holding the trigger texts, declarations, every kind of
    DOCTYPE pointing at ``url``. ``root(attribute_value, content)`` makes the root element."""
    trigger_text = st.lists(st.sampled_from([*TRIGGERS, "x", " ", "\u00e9"]), max_size=6).map(
        "".join
    )
    comment = trigger_text.map(lambda t: f"<!--{t.replace('--', '- -')}-->")
    pi = trigger_text.map(lambda t: f"<?pi {t.replace('?>', '? >')}?>")
    space = st.sampled_from([" ", "\n", "\t", "\r\n"])
    misc = st.lists(st.one_of(comment, pi, space), max_size=4).map("".join)
    starts = ["", "<?xml version='1.0'?>", '<?xml version="1.0" ?>']
    declaration = st.sampled_from([*starts, "\ufeff"] if bom else starts)
    doctype = st.one_of(st.none(), st.sampled_from(sorted(dtds(url).values())))
    attr_text = trigger_text.map(escape)
    cdata = trigger_text.map(lambda t: f"<![CDATA[{t.replace(']]>', ']] >')}]]>")
    content = st.lists(st.one_of(cdata, attr_text, st.just("&e;")), max_size=3).map("".join)

    @st.composite
    def build(draw: st.DrawFn) -> tuple[str, bool]:
        dt = draw(doctype)
        element = root(draw(attr_text), draw(content))
        return draw(declaration) + draw(misc) + (dt or "") + draw(misc) + element, dt is not None

    return build()
