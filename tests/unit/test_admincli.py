"""``boshd sessions list``'s table (boshd.admincli)."""

from __future__ import annotations

from boshd.admincli import _table


def test_the_session_table_has_a_domain_column() -> None:
    """``boshd sessions list`` shows ``domain`` between transport and JID; a session without
    one (a WebSocket before its ``<open/>``) shows ``-`` (issue 16 #7)."""
    table = _table(
        [
            {"sid": "a1", "transport": "bosh", "domain": "example.com", "jid": "u@example.com/r"},
            {"sid": "b2", "transport": "websocket", "domain": None, "jid": None},
        ]
    )
    lines = [line.split() for line in table.splitlines()]
    assert lines[0] == [
        "sid",
        "transport",
        "domain",
        "jid",
        "client_ip",
        "age",
        "idle",
        "held_requests",
    ]
    assert lines[1][:4] == ["a1", "bosh", "example.com", "u@example.com/r"]
    assert lines[2][:4] == ["b2", "websocket", "-", "-"]
