"""Log lines for people and for log shippers.

``log.format = "json"`` writes one JSON object per line: ``ts``, ``level``, ``logger``,
``msg`` (the line as the text format writes it) and, for lines about a session or a client,
each detail as a key of its own (``sid``, ``client``, ``transport``, ``domain``, ``jid``,
``cause``, ``condition``, ``reason``, ``duration``, ``bytes_in``, ``bytes_out``, ...), passed
by the logging call as ``extra=fields(...)``. The text format ignores them: its message
already says the same in words.

Values a client chooses (a domain, a resource) can hold anything; :func:`shown` renders them
so that a text line stays one line and cannot pass for another.
"""

from __future__ import annotations

import json
import logging
import re
import time
from typing import Any

FIELDS = "boshd_fields"  # the LogRecord attribute that carries them
MAX_SHOWN = 256  # characters of a client-chosen value a line shows at most

_PLAIN = re.compile(r"[\w.@/:+\-\[\]%]+")


def fields(**values: Any) -> dict[str, dict[str, Any]]:
    """``extra=`` for a logging call: ``values`` become keys of the JSON line."""
    return {FIELDS: values}


def capped(value: str | None) -> str | None:
    """``value`` cut to :data:`MAX_SHOWN` characters (for a JSON field)."""
    if value is None or len(value) <= MAX_SHOWN:
        return value
    return value[:MAX_SHOWN] + "…"


def shown(value: object, *, spaces: bool = False) -> str:
    """``value`` for a text log line: ``-`` when empty, as it is when it is a plain token
    (with ``spaces``: any printable text), else quoted with every unusual character escaped."""
    if value is None or value == "":
        return "-"
    text = capped(str(value))
    assert text is not None
    if _PLAIN.fullmatch(text) or (spaces and text.isprintable()):
        return text
    return json.dumps(text)  # ASCII only: no line break or look-alike survives


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, FIELDS, None)
        if isinstance(extra, dict):
            for key, value in extra.items():
                entry.setdefault(key, value)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)
