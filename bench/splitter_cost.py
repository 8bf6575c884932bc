"""Cost of :class:`boshd.upstream.splitter.Splitter` per typical message stanza (no assertions).

Run from the repository root: ``.venv/bin/python -m bench.splitter_cost [count] [chunk_bytes]``
"""

from __future__ import annotations

import sys
import time

from boshd.upstream.splitter import ElementReady, Splitter

HEADER = (
    b"<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    b"xmlns:stream='http://etherx.jabber.org/streams' id='c2s-1' from='example.com' "
    b"version='1.0' xml:lang='en'>"
)
MESSAGE = (
    b"<message from='juliet@example.com/balcony' to='romeo@example.net' type='chat' "
    b"id='ktx72v49'><body>Art thou not Romeo, and a Montague?</body>"
    b"<active xmlns='http://jabber.org/protocol/chatstates'/>"
    b"<stanza-id xmlns='urn:xmpp:sid:0' id='5f3dbc5e' by='romeo@example.net'/></message>"
)


def run(count: int, chunk: int) -> float:
    """Feed ``count`` messages in ``chunk``-byte writes; return µs per stanza (best of 3)."""
    stream = HEADER + MESSAGE * count
    chunks = [stream[i : i + chunk] for i in range(0, len(stream), chunk)]
    best = float("inf")
    for _ in range(3):
        splitter = Splitter()
        seen = 0
        began = time.perf_counter()
        for piece in chunks:
            for event in splitter.feed(piece):
                if isinstance(event, ElementReady):
                    seen += 1
        elapsed = time.perf_counter() - began
        if seen != count:
            raise SystemExit(f"expected {count} stanzas, got {seen}")
        best = min(best, elapsed)
    return best / count * 1e6


def main() -> None:
    count = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    chunks = [int(sys.argv[2])] if len(sys.argv) > 2 else [len(MESSAGE), 4096, 65536]
    print(f"message stanza: {len(MESSAGE)} bytes, {count} stanzas, best of 3")
    for chunk in chunks:
        print(f"  chunk {chunk:>6} bytes: {run(count, chunk):6.2f} µs/stanza")


if __name__ == "__main__":
    main()
