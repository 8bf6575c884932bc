"""Pure incremental splitter: the bytes of an upstream c2s stream -> header, stanzas, end.

The XMPP server's stream is parsed with expat (namespace processing on), which reports byte
offsets, so every top-level element is relayed *byte-faithfully*: ``Stanza.data`` is exactly
the bytes the server sent for that element, except that the namespace declarations it
inherited from the server's stream header are inserted right after its qname in the start tag
(C-NS-03, X-WRAP-01/05, W-FRM-03): the default namespace always (unless the element declares
its own), a prefixed one (``stream:``) only if the element's subtree uses that prefix.

No I/O, no asyncio: :meth:`Splitter.feed` takes whatever bytes arrived and returns the events
completed by them, in order. Text between top-level elements (whitespace keepalives) is
dropped (W-PING-01, C-XML-05). DOCTYPEs, entity declarations, comments and processing
instructions are refused (C-XML-01); entities are never expanded. Memory is bounded by
``max_stanza_bytes``: consumed input is discarded and an element that grows beyond the limit
is refused before it completes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any
from xml.parsers import expat

from boshd.core.conditions import StreamErrorCondition
from boshd.core.errors import UpstreamError
from boshd.core.events import ServerStreamInfo, Stanza
from boshd.core.ns import STREAMS_NS

_XML_LANG = "http://www.w3.org/XML/1998/namespace lang xml"
_WHITESPACE = b" \t\r\n"
# A complete start tag: quoted attribute values may contain '>' and '/', nothing else may.
_START_TAG = re.compile(rb"""<(?:[^'">]++|'[^']*+'|"[^"]*+")*+>""")


class SplitterError(UpstreamError):
    """The server's stream cannot be relayed: not well-formed, restricted XML, wrong root or
    an oversized element. ``stream_condition`` is what to tell the server (RFC 6120 §4.9.3);
    ``events`` holds those completed in the failing :meth:`Splitter.feed` before the fault."""

    kind = "protocol"

    def __init__(
        self,
        reason: str,
        stream_condition: StreamErrorCondition = StreamErrorCondition.NOT_WELL_FORMED,
    ) -> None:
        super().__init__(reason)
        self.stream_condition = stream_condition
        self.events: tuple[SplitterEvent, ...] = ()


@dataclass(frozen=True, slots=True)
class StreamStart:
    """The server's ``<stream:stream>`` header; ``namespaces`` maps prefix (None: default)
    to URI for the declarations on it."""

    info: ServerStreamInfo
    namespaces: dict[str | None, str]


@dataclass(frozen=True, slots=True)
class ElementReady:
    """One complete top-level element (stanza, features, SASL, SM, ...), self-contained."""

    stanza: Stanza


@dataclass(frozen=True, slots=True)
class StreamErrorReceived:
    """The server sent ``<stream:error/>``; ``stanza`` is the whole element, self-contained."""

    stanza: Stanza


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The server closed its stream with ``</stream:stream>``."""


SplitterEvent = StreamStart | ElementReady | StreamErrorReceived | StreamEnd


def _escape_attr(value: str) -> bytes:
    """``value`` as the content of a single-quoted attribute, surviving normalisation."""
    return (
        value.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace("'", "&apos;")
        .replace("\t", "&#9;")
        .replace("\n", "&#10;")
        .replace("\r", "&#13;")
        .encode()
    )


class Splitter:
    """Turns the bytes of one upstream c2s stream into :data:`SplitterEvent` s.

    Call :meth:`reset` when the stream restarts (after STARTTLS or SASL success): the server
    then sends a new XML declaration and header. After a :class:`SplitterError` every further
    :meth:`feed` fails too; the connection has to go.
    """

    __slots__ = (
        "_attrs",
        "_base",
        "_buf",
        "_events",
        "_failed",
        "_header_decls",
        "_header_ns",
        "_local",
        "_mark",
        "_name",
        "_ns",
        "_open",
        "_own",
        "_parser",
        "_priming",
        "_qname",
        "_root_qname",
        "_scoped",
        "_start",
        "_used",
        "max_stanza_bytes",
    )

    def __init__(self, max_stanza_bytes: int = 1 << 20) -> None:
        if max_stanza_bytes <= 0:
            raise ValueError("max_stanza_bytes must be positive")
        self.max_stanza_bytes = max_stanza_bytes
        self.reset()

    def reset(self) -> None:
        """Forget everything and expect a brand new stream (XML declaration and header)."""
        self._parser: Any = self._new_parser()
        self._priming = False
        self._buf = bytearray()  # unconsumed input; _buf[0] is at absolute offset _base
        self._base = 0
        self._mark = 0  # absolute offset before which no byte is needed any more
        self._events: list[SplitterEvent] = []
        self._failed: SplitterError | None = None
        self._open = 0  # elements currently open, the stream root included
        self._root_qname = b""
        self._header_ns: dict[str | None, str] = {}  # declared on the stream header
        self._header_decls: dict[str | None, bytes] = {}  # the same, as b" xmlns:p='uri'"
        # The top-level element being read (when _start >= 0).
        self._start = -1
        self._qname = b""
        self._name = ""
        self._ns = ""
        self._attrs: dict[str, str] = {}
        self._own: set[str | None] = set()  # prefixes it declares itself
        self._local: dict[str, int] = {}  # prefixes declared inside it and in scope
        self._scoped: list[tuple[int, str]] = []  # (level, prefix) declared below level 1
        self._used: set[str] = set()  # header prefixes its subtree uses

    def recycle(self) -> bool:
        """Between two top-level elements, let go of the expat parser; the next :meth:`feed`
        starts a fresh one, primed with an equivalent stream header (the same root and
        namespace declarations).

        An expat parser holds about 9 KB once it has parsed anything, and keeps tables of
        every name it has seen: about 15 KB after a login, growing with the vocabulary. An
        idle session then holds none of that, an active one sheds it now and then; nothing
        observable changes. Returns False (and does nothing) unless the stream is open and no
        element is in progress.
        """
        if self._parser is None:
            return True  # already let go
        if self._failed is not None or self._open != 1 or self._start >= 0 or self._buf.strip():
            return False
        self._parser = None
        self._buf = bytearray()
        return True

    def _prime(self) -> None:
        """A fresh parser, inside an equivalent stream (see recycle)."""
        header = b"<" + self._root_qname + b"".join(self._header_decls.values()) + b">"
        parser = self._new_parser()
        self._parser = parser
        self._open = 0
        self._priming = True
        try:
            parser.Parse(header, False)
        finally:
            self._priming = False
        self._base = self._mark = len(header)

    def _new_parser(self) -> Any:
        parser = expat.ParserCreate("UTF-8", " ")
        parser.namespace_prefixes = True
        if hasattr(parser, "SetReparseDeferralEnabled"):  # expat >= 2.6 (CPython >= 3.11.9)
            # Deferral can hold back an element whose last bytes came in a small chunk.
            parser.SetReparseDeferralEnabled(False)
        parser.XmlDeclHandler = self._on_xml_decl
        parser.StartDoctypeDeclHandler = self._on_doctype
        parser.EntityDeclHandler = self._on_entity_decl
        parser.CommentHandler = self._on_comment
        parser.ProcessingInstructionHandler = self._on_pi
        parser.StartNamespaceDeclHandler = self._on_ns_start
        parser.StartElementHandler = self._on_start
        parser.EndElementHandler = self._on_end
        return parser

    def feed(self, data: bytes) -> list[SplitterEvent]:
        """Consume ``data``; return the events it completed, in stream order."""
        if self._failed is not None:
            raise SplitterError(
                f"stream already failed: {self._failed.reason}", self._failed.stream_condition
            )
        if self._parser is None:
            self._prime()
        self._buf += data
        try:
            self._parser.Parse(data, False)
            self._compact()
        except SplitterError as exc:
            self._fail(exc)
            raise
        except expat.ExpatError as exc:
            code = exc.code
            condition = (
                StreamErrorCondition.RESTRICTED_XML
                if code == expat.errors.codes[expat.errors.XML_ERROR_UNDEFINED_ENTITY]
                else StreamErrorCondition.NOT_WELL_FORMED
            )
            reason = (
                f"not well-formed XML from the server: {expat.ErrorString(code)} "
                f"(line {exc.lineno}, column {exc.offset})"
            )
            err = SplitterError(reason, condition)
            self._fail(err)
            raise err from exc
        events, self._events = self._events, []
        return events

    # ----------------------------------------------------------------------- internals

    def _fail(self, err: SplitterError) -> None:
        err.events = tuple(self._events)
        self._events = []
        self._failed = err
        self._buf = bytearray()

    def _compact(self) -> None:
        """Drop the bytes no future element can need; refuse an oversized one."""
        buf = self._buf
        if self._start >= 0:
            cut = self._start
        else:
            # Between elements: the next one starts at a '<'; text before it is dropped.
            i = buf.find(b"<", max(self._mark - self._base, 0))
            cut = self._base + (len(buf) if i < 0 else i)
        if cut > self._base:
            del buf[: cut - self._base]
            self._base = cut
        if len(buf) > self.max_stanza_bytes:
            what = "an element" if self._start >= 0 else "the data between elements"
            raise SplitterError(
                f"{what} from the server exceeds {self.max_stanza_bytes} bytes",
                StreamErrorCondition.POLICY_VIOLATION,
            )

    def _on_xml_decl(self, version: str | None, encoding: str | None, standalone: int) -> None:
        if encoding is not None and encoding.lower() not in ("utf-8", "utf8"):
            raise SplitterError(
                f"the server's stream uses encoding {encoding!r}, not UTF-8",
                StreamErrorCondition.UNSUPPORTED_ENCODING,
            )

    def _on_doctype(self, *_: object) -> None:
        raise SplitterError("the server sent a DOCTYPE", StreamErrorCondition.RESTRICTED_XML)

    def _on_entity_decl(self, *_: object) -> None:
        raise SplitterError("the server declared an entity", StreamErrorCondition.RESTRICTED_XML)

    def _on_comment(self, _: str) -> None:
        raise SplitterError("the server sent a comment", StreamErrorCondition.RESTRICTED_XML)

    def _on_pi(self, _target: str, _data: str) -> None:
        raise SplitterError(
            "the server sent a processing instruction", StreamErrorCondition.RESTRICTED_XML
        )

    def _on_ns_start(self, prefix: str | None, uri: str | None) -> None:
        # Called before the start of the element carrying the declaration, which will be at
        # level self._open (0: the stream header, 1: a top-level element). Only prefixed
        # declarations below level 1 matter: they shadow the header's for their subtree.
        level = self._open
        if level == 0:
            if uri:
                self._header_ns[prefix] = uri
                attr = b" xmlns" if prefix is None else b" xmlns:" + prefix.encode()
                self._header_decls[prefix] = attr + b"='" + _escape_attr(uri) + b"'"
            return
        if level == 1:
            self._own.add(prefix)
        if prefix is not None:
            self._local[prefix] = self._local.get(prefix, 0) + 1
            if level >= 2:
                self._scoped.append((level, prefix))

    def _use(self, prefix: str) -> None:
        """A name in the current element uses ``prefix``: note it if the header binds it."""
        if not self._local.get(prefix) and prefix != "xml":
            self._used.add(prefix)

    def _on_start(self, name: str, attrs: dict[str, str]) -> None:
        level = self._open
        self._open = level + 1
        if level >= 2:
            if name.count(" ") == 2:
                self._use(name.rpartition(" ")[2])
            for key in attrs:
                if " " in key:
                    self._use(key.rpartition(" ")[2])
            return
        parts = name.split(" ")
        if len(parts) == 1:
            ns, local, qname = "", name, name
        else:
            ns, local = parts[0], parts[1]
            qname = local if len(parts) == 2 else f"{parts[2]}:{local}"
        if level == 1:
            self._start = self._parser.CurrentByteIndex
            self._qname = qname.encode()
            self._name = local
            self._ns = ns
            self._attrs = attrs
            if len(parts) == 3:
                self._use(parts[2])
            for key in attrs:
                if " " in key:
                    self._use(key.rpartition(" ")[2])
            return
        if self._priming:
            return  # recycle(): our own copy of the header, already reported once
        if ns != STREAMS_NS:
            raise SplitterError(
                f"the server's stream root is {{{ns}}}{local}, not {{{STREAMS_NS}}}stream",
                StreamErrorCondition.INVALID_NAMESPACE,
            )
        if local != "stream":
            raise SplitterError(
                f"the server's stream root is {local!r}, not 'stream'",
                StreamErrorCondition.BAD_FORMAT,
            )
        self._root_qname = qname.encode()
        rel = self._parser.CurrentByteIndex - self._base
        match = _START_TAG.match(self._buf, rel)
        self._mark = self._base + (match.end() if match else rel)
        info = ServerStreamInfo(
            id=attrs.get("id"),
            from_=attrs.get("from"),
            version=attrs.get("version"),
            lang=attrs.get(_XML_LANG),
        )
        self._events.append(StreamStart(info, dict(self._header_ns)))

    def _on_end(self, name: str) -> None:
        self._open -= 1
        level = self._open
        if level >= 2:
            scoped = self._scoped
            if scoped and scoped[-1][0] == level:  # the end of a prefix declaration's scope
                while scoped and scoped[-1][0] == level:
                    self._local[scoped.pop()[1]] -= 1
            return
        if level == 0:
            at = self._parser.CurrentByteIndex - self._base
            self._mark = self._base + self._buf.index(b">", at) + 1
            self._events.append(StreamEnd())
            return
        self._finish_element()

    def _finish_element(self) -> None:
        """The current top-level element ended: slice it out and emit it."""
        buf, base, qname = self._buf, self._base, self._qname
        start = self._start - base
        at = self._parser.CurrentByteIndex - base
        # expat reports the '</' of an end tag, or the offset just after an empty-element tag.
        close = b"</" + qname
        after = at + len(close)
        if (
            buf.startswith(close, at)
            and after < len(buf)
            and (buf[after] == 0x3E or buf[after] in _WHITESPACE)  # '>' or whitespace
            and not (qname == self._root_qname and self._is_empty_tag(start))
        ):
            end = buf.index(b">", after) + 1
        else:
            end = at
        if end - start > self.max_stanza_bytes:
            raise SplitterError(
                f"an element from the server exceeds {self.max_stanza_bytes} bytes",
                StreamErrorCondition.POLICY_VIOLATION,
            )
        split = start + 1 + len(qname)
        if self._own or self._used:
            decls = b"".join(
                decl
                for prefix, decl in self._header_decls.items()
                if (prefix is None and None not in self._own) or prefix in self._used
            )
        else:
            decls = self._header_decls.get(None, b"")
        data = (
            b"".join((buf[start:split], decls, buf[split:end])) if decls else bytes(buf[start:end])
        )
        attrs = self._attrs
        stanza = Stanza(
            data=data,
            name=self._name,
            ns=self._ns,
            type=attrs.get("type"),
            id=attrs.get("id"),
            from_=attrs.get("from"),
            to=attrs.get("to"),
        )
        if self._ns == STREAMS_NS and self._name == "error":
            self._events.append(StreamErrorReceived(stanza))
        else:
            self._events.append(ElementReady(stanza))
        self._mark = base + end
        self._start = -1
        self._attrs = {}
        if self._own:
            self._own = set()
        if self._local:
            self._local = {}
            self._scoped = []
        if self._used:
            self._used = set()

    def _is_empty_tag(self, start: int) -> bool:
        """Whether the start tag at ``start`` (relative) is an empty-element tag ``<x/>``."""
        match = _START_TAG.match(self._buf, start)
        return match is not None and self._buf[match.end() - 2] == 0x2F  # '/'
