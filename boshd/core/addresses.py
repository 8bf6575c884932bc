"""The ``route`` attribute of a session creation request (XEP-0124 §7.1).

Pure and standard library only: the configuration checks ``upstream.allowed_routes`` with it
and the upstream router connects with it, so both read a route the same way.
"""

from __future__ import annotations


def split_route(route: str) -> tuple[str, int] | None:
    """``proto:host:port`` (XEP-0124 §7.1): not a URI; split on the last colon (B-SREQ-06).

    ``None`` unless the protocol is ``xmpp`` and the port a number in 1..65535; the host is
    returned lower-case without IPv6 brackets.
    """
    proto, sep, rest = route.partition(":")
    host, sep2, port = rest.rpartition(":")
    if not sep or not sep2 or proto != "xmpp" or not host or not port.isdigit():
        return None
    number = int(port)
    if not 0 < number <= 65535:
        return None
    return host.strip("[]").lower(), number
