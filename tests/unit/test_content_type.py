"""The session's Content-Type (B-HTTP-09/10) is echoed into every response head."""

from __future__ import annotations

import pytest

from boshd.core.params import DEFAULT_CONTENT_TYPE, content_type_for

ALLOWED = ("text/xml", "application/xml", "text/plain")


@pytest.mark.parametrize(
    "requested",
    [
        "text/xml; charset=utf-8",
        "text/xml",
        'text/plain;charset="utf-8"',
        "application/xml",
        "text/xml;",
        "text/xml; ; charset=utf-8",
        "text/xml;\tcharset=utf-8",
    ],
)
def test_plain_media_types_are_kept(requested: str) -> None:
    """A listed media type with parameters as RFC 9110 §5.6.6 allows them (empty ones and tabs
    included) is used as asked (B-HTTP-09)."""
    assert content_type_for(requested, ALLOWED) == requested


@pytest.mark.parametrize(
    "requested",
    [
        "text/xml; a=\r\nX-Injected: yes",
        "text/xml \r\n; charset=utf-8",
        "text/xml; a=\u20ac",
        "text/xml; a=\x00",
        "text/xml; broken",
        "text/html",
        "text/xml; charset=latin-1",
    ],
)
def test_anything_else_gets_the_default(requested: str) -> None:
    """Control characters, non-ASCII, malformed parameters, other types or charsets fall
    back to the default, so nothing can be injected into the response head (B-HTTP-10)."""
    assert content_type_for(requested, ALLOWED) == DEFAULT_CONTENT_TYPE
