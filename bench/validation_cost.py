"""Cost of parsing and validating one BOSH request body (a timing report, no assertions).

Measures, per body: :func:`boshd.wire.parser.parse_body`, :meth:`BodySchema.check` (the fast
path) and, for comparison, xmlschema's full ``iter_errors`` validation.

Run from the repository root: ``.venv/bin/python -m bench.validation_cost [count]``
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

from boshd.wire.parser import parse_body
from boshd.wire.schema import BodySchema

MAX_BYTES = 1 << 20

# What StropheJS sends while a chat is going on: rid, sid and one message stanza.
MESSAGE_BODY = (
    b"<body rid='3208373593' xmlns='http://jabber.org/protocol/httpbind' sid='a1b2c3d4e5f6'>"
    b"<message to='romeo@example.net' type='chat' id='ktx72v49' xmlns='jabber:client'>"
    b"<body>Art thou not Romeo, and a Montague?</body>"
    b"<active xmlns='http://jabber.org/protocol/chatstates'/></message></body>"
)
# An empty poll.
POLL_BODY = (
    b"<body rid='3208373594' xmlns='http://jabber.org/protocol/httpbind' sid='a1b2c3d4e5f6'/>"
)
# StropheJS's session creation request.
CREATE_BODY = (
    b"<body rid='3208373592' xmlns='http://jabber.org/protocol/httpbind' to='example.com' "
    b"xml:lang='en' wait='60' hold='1' content='text/xml; charset=utf-8' ver='1.6' "
    b"xmpp:version='1.0' xmlns:xmpp='urn:xmpp:xbosh'/>"
)
# A restart request after SASL success.
RESTART_BODY = (
    b"<body rid='3208373595' xmlns='http://jabber.org/protocol/httpbind' sid='a1b2c3d4e5f6' "
    b"to='example.com' xml:lang='en' xmpp:restart='true' xmlns:xmpp='urn:xmpp:xbosh'/>"
)
# A larger body: 40 messages (about 9 KB).
BATCH_BODY = (
    b"<body rid='3208373596' xmlns='http://jabber.org/protocol/httpbind' sid='a1b2c3d4e5f6'>"
    + b"<message to='romeo@example.net' type='chat' id='ktx72v49' xmlns='jabber:client'>"
    b"<body>Art thou not Romeo, and a Montague?</body>"
    b"<active xmlns='http://jabber.org/protocol/chatstates'/></message>" * 40 + b"</body>"
)


def per_call(func: Callable[[], object], count: int) -> float:
    """µs per call of ``func``, best of 5 runs of ``count`` calls."""
    best = float("inf")
    for _ in range(5):
        began = time.perf_counter()
        for _ in range(count):
            func()
        best = min(best, time.perf_counter() - began)
    return best / count * 1e6


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    began = time.perf_counter()
    schema = BodySchema.load()
    load_ms = (time.perf_counter() - began) * 1e3
    full = schema._schema  # the xmlschema object, only to show what the fast path saves
    print(f"schema load: {load_ms:.0f} ms (once per process); fast path: {schema.fast_path}")
    print(f"µs per body, best of 5 x {count} calls:")
    print(f"  {'body':<10} {'bytes':>6} {'parse':>8} {'check':>8} {'iter_errors':>12}")
    bodies = [
        ("message", MESSAGE_BODY),
        ("poll", POLL_BODY),
        ("create", CREATE_BODY),
        ("restart", RESTART_BODY),
        ("batch", BATCH_BODY),
    ]
    for name, data in bodies:
        root = parse_body(data, max_bytes=MAX_BYTES)
        schema.check(root)
        parse_us = per_call(lambda data=data: parse_body(data, max_bytes=MAX_BYTES), count)
        check_us = per_call(lambda root=root: schema.check(root), count)
        full_us = per_call(lambda root=root: list(full.iter_errors(root)), max(count // 20, 50))
        print(f"  {name:<10} {len(data):>6} {parse_us:>8.1f} {check_us:>8.1f} {full_us:>12.1f}")


if __name__ == "__main__":
    main()
