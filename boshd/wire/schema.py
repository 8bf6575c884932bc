"""Validation of BOSH request ``<body/>`` elements against ``schemas/httpbind.xsd``.

The schemas (``httpbind.xsd``, ``xbosh.xsd`` and a local ``xml.xsd``) are loaded once with
xmlschema, sandboxed to the schema directory and with xmlschema's bundled fallback schemas
switched off, so loading and validating never touch the network or any other file.

Why there is a fast path
------------------------
Full validation, ``XMLSchema.iter_errors(elem)``, costs 170-290 µs for a typical small body
(measured with ``bench/validation_cost.py`` on the 2-core development VM; the spread is load
from other processes): most of it is xmlschema wrapping the element in an ``XMLResource``
and setting up a validation context, not checking anything. Every BOSH request goes through
here, and parsing the same body costs only 10-17 µs. The check itself is small: the body's
content model is "any elements, skipped", so only the root name, the attributes and the text
between children need looking at. Checking one attribute value with xmlschema's compiled
simple type, ``XsdAttribute.type.text_is_valid(value)``, costs 1-2 µs for a string and 4-8 µs
for an integer (the ASCII-digit pattern of ``httpbind.xsd`` is about half of that).

So at load time :class:`BodySchema` takes xmlschema's compiled ``body`` declaration, verifies
that its content model is exactly what the fast path understands (element-only content made of
a single ``processContents='skip'`` wildcard, no identity constraints, no fixed or prohibited
attributes) and keeps a table "qualified attribute name -> compiled XsdAttribute", the
``anyAttribute`` wildcard and the required attribute names. Per request it checks:

* the root is ``{http://jabber.org/protocol/httpbind}body`` (B-WRAP-01, B-WRAP-06);
* each attribute is declared, or matched by the wildcard; a wildcard match in a namespace
  with a global declaration (``urn:xmpp:xbosh``, ``xml:``) is checked against that
  declaration, as xmlschema's lax processing does (X-RST-01);
* each value passes ``text_is_valid`` of its declared type (B-WRAP-07, B-SREQ-10/11/13/14);
* required attributes are present (none today: which request needs ``rid`` or ``sid`` is
  decided by the session code);
* no character data directly inside ``<body/>`` (B-WRAP-04; whitespace is tolerated, A-4),
  and no comment or PI children (B-WRAP-06; the parser refuses those already).

Measured the same way, ``check()`` costs 8-15 µs for a body with ``rid``, ``sid`` and one
message (about 20x less than full validation) and 27-43 µs for a session creation request
with nine attributes. Rejected bodies are rare, so when the fast path rejects, the full
``iter_errors`` runs once to produce a precise reason (attribute, value, why). If the XSD
is ever changed into something the fast path does not understand, :class:`BodySchema` logs a
warning once and validates every body fully.

Like lxml parsers, a loaded schema is not thread-safe: ``text_is_valid`` uses a validation
context stored on the xmlschema object. boshd validates on the event loop thread only.

Two things are checked by boshd itself in both paths, because xmlschema does not do them:
xmlschema accepts character data in element-only content when the content model is a single
wildcard, and it uses ``str.strip()`` (all Unicode whitespace) where XML whitespace is only
space, tab, CR and LF. ``full_errors`` therefore reports boshd's structural checks plus the
schema errors, and it is the reference the fast path is tested against.

Attributes in the XML Schema instance namespace (``xsi:type``, ``xsi:nil``, ...) change how
a validator treats the element; the fast path does not model them and hands such bodies to
full validation.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import xmlschema
from lxml import etree
from xmlschema.exceptions import XMLSchemaWarning

from boshd.core.errors import BadRequest, ConfigError
from boshd.core.ns import BOSH_NS, XBOSH_NS, XML_NS

__all__ = [
    "BODY_TAG",
    "HTTPBIND_NS",
    "XBOSH_NS",
    "BodySchema",
    "default_body_schema",
    "default_schema_dir",
]

log = logging.getLogger(__name__)

HTTPBIND_NS: Final = BOSH_NS
XSI_NS: Final = "http://www.w3.org/2001/XMLSchema-instance"
BODY_TAG: Final = f"{{{HTTPBIND_NS}}}body"

SCHEMA_FILES: Final[Mapping[str, str]] = {
    HTTPBIND_NS: "httpbind.xsd",
    XBOSH_NS: "xbosh.xsd",
    XML_NS: "xml.xsd",
}

# XML 1.0 §2.3 "S": the only whitespace characters. str.strip() would also remove U+00A0,
# U+2003 and friends, which are character data (B-WRAP-04).
_XML_WHITESPACE: Final = " \t\r\n"

_XSI_PREFIX: Final = f"{{{XSI_NS}}}"

# How many schema errors a rejection reason quotes.
_MAX_REASONS: Final = 3


def default_schema_dir() -> Path:
    """The ``schemas`` directory shipped with boshd.

    In a source checkout (and an editable install) it sits next to the ``boshd`` package
    directory, i.e. ``Path(__file__).parents[2] / "schemas"``; an installation that puts it
    inside the package (``boshd/schemas``) is found as well.
    """
    here = Path(__file__).resolve()
    candidates = (here.parents[2] / "schemas", here.parents[1] / "schemas")
    for candidate in candidates:
        if (candidate / SCHEMA_FILES[HTTPBIND_NS]).is_file():
            return candidate
    tried = ", ".join(str(c) for c in candidates)
    raise ConfigError([f"schemas: httpbind.xsd not found (looked in {tried})"])


@dataclass(frozen=True, slots=True)
class _FastPath:
    """What the fast path needs from xmlschema's compiled ``body`` declaration."""

    declared: Mapping[str, Any]  # qualified attribute name -> XsdAttribute
    wildcard: Any | None  # XsdAnyAttribute, or None when there is no anyAttribute
    wildcard_decls: Mapping[str, Any]  # global XsdAttribute declarations for lax/strict
    required: frozenset[str]


class BodySchema:
    """The loaded BOSH ``<body/>`` schema; :meth:`check` validates one request body."""

    def __init__(self, schema: Any, *, source: Path) -> None:
        """Wrap an already loaded xmlschema ``XMLSchema10``; use :meth:`load` instead."""
        self._schema = schema
        self.source = source
        self._body_decl = schema.elements["body"]
        fast_or_reason = _compile_fast_path(schema, self._body_decl)
        if isinstance(fast_or_reason, str):
            log.warning(
                "%s: fast body validation disabled (%s); every body is validated in full",
                source,
                fast_or_reason,
            )
            self._fast: _FastPath | None = None
        else:
            self._fast = fast_or_reason

    @classmethod
    def load(cls, schema_dir: Path | None = None) -> BodySchema:
        """Load ``httpbind.xsd`` (with ``xbosh.xsd`` and ``xml.xsd``) from ``schema_dir``.

        Nothing outside ``schema_dir`` is read and no URL is fetched: xmlschema runs in
        sandbox mode, without its bundled fallback schemas, and every import warning (e.g. a
        blocked remote ``schemaLocation``) is an error. Raises
        :class:`~boshd.core.errors.ConfigError` when the schemas cannot be loaded.
        """
        directory = (schema_dir if schema_dir is not None else default_schema_dir()).resolve()
        paths = {ns: directory / name for ns, name in SCHEMA_FILES.items()}
        missing = [str(p) for p in paths.values() if not p.is_file()]
        if missing:
            raise ConfigError([f"schemas: missing {m}" for m in missing])
        try:
            with warnings.catch_warnings():
                # A failed xs:import/xs:include is only a warning in xmlschema; here it is fatal.
                warnings.simplefilter("error", XMLSchemaWarning)
                schema = xmlschema.XMLSchema10(
                    str(paths[HTTPBIND_NS]),
                    base_url=str(directory),
                    allow="sandbox",  # only files below `directory`; no URLs at all
                    defuse="always",  # parse the XSD files without DTDs or entities
                    use_fallback=False,  # never pull xmlschema's bundled schemas
                    locations={ns: p.as_uri() for ns, p in paths.items() if ns != HTTPBIND_NS},
                )
        except Exception as exc:  # xmlschema raises many unrelated exception types
            raise ConfigError([f"schemas: cannot load {paths[HTTPBIND_NS]}: {exc}"]) from exc
        _verify_local_copies(schema, paths)
        return cls(schema, source=paths[HTTPBIND_NS])

    @property
    def fast_path(self) -> bool:
        """True when bodies are checked by the fast path (false: full validation)."""
        return self._fast is not None

    def check(self, elem: etree._Element) -> None:
        """Raise :class:`~boshd.core.errors.BadRequest` unless ``elem`` is a valid ``<body/>``."""
        # Bounded work: xmlschema is pure Python and slow on many attributes (20,000 unknown
        # ones took 2 s to explain), so that count is capped before it runs (G-LIM-01).
        count = len(elem.attrib)
        if count > MAX_BODY_ATTRIBUTES:
            raise BadRequest(
                f"<body/> has {count} attributes, at most {MAX_BODY_ATTRIBUTES} are accepted"
            )
        problem = _structure_problem(elem)
        if problem is not None:
            raise BadRequest(problem)
        fast = self._fast
        if fast is not None:
            # lxml always yields str names and values; lxml-stubs type them as str | bytes.
            problem = _attribute_problem(fast, cast("Mapping[str, str]", elem.attrib))
            if problem is None:
                return
            if problem is not _DELEGATE:
                raise BadRequest(self._explain(elem, problem))
        try:
            errors = self._schema_errors(elem)
        except Exception as exc:  # client input must never turn into a server error
            log.exception("full validation of a request body failed")
            raise BadRequest(f"body could not be validated: {exc}") from exc
        if errors:
            raise BadRequest(_join(errors))

    def full_errors(self, elem: etree._Element) -> list[str]:
        """Every problem full validation finds: boshd's structural checks plus xmlschema's."""
        problem = _structure_problem(elem)
        if problem is not None and elem.tag != BODY_TAG:
            return [problem]  # not a body at all: schema errors would only repeat it
        errors = [] if problem is None else [problem]
        errors.extend(self._schema_errors(elem))
        return errors

    def _schema_errors(self, elem: etree._Element) -> list[str]:
        """xmlschema's findings, one per attribute (it often reports a bad value twice)."""
        errors: dict[str, str] = {}
        # Location hints (xsi:schemaLocation) from a client must never load anything.
        for err in self._schema.iter_errors(elem, use_location_hints=False):
            reason = _describe(err)
            key = reason.split(": ", 1)[0] if reason.startswith("attribute ") else reason
            errors.setdefault(key, reason)
        return list(errors.values())

    def _explain(self, elem: etree._Element, fast_reason: str) -> str:
        """Reason for a body the fast path rejected, in full validation's words."""
        try:
            errors = self._schema_errors(elem)
        except Exception:  # never let the explanation turn a rejection into a crash
            log.exception("full validation failed while explaining a rejected body")
            return fast_reason
        if not errors:
            log.warning("fast path rejected a body that full validation accepts: %s", fast_reason)
            return fast_reason
        return _join(errors)


@functools.cache
def default_body_schema() -> BodySchema:
    """The schema from :func:`default_schema_dir`, loaded once per process."""
    return BodySchema.load()


MAX_BODY_ATTRIBUTES: Final = 64
"""Most attributes a ``<body/>`` may carry: XEP-0124 and XEP-0206 define about 25."""


class _Delegate(str):
    """Marker: the fast path cannot decide; run full validation."""


_DELEGATE: Final = _Delegate("needs full validation")


def _structure_problem(elem: etree._Element) -> str | None:
    """What boshd itself requires of a body, beyond the schema (B-WRAP-01/04/06)."""
    if elem.tag != BODY_TAG:
        tag = elem.tag if isinstance(elem.tag, str) else "a non-element node"
        return f"root element is {tag}, expected <body/> in namespace {HTTPBIND_NS} (B-WRAP-06)"
    text = elem.text
    if text and text.strip(_XML_WHITESPACE):
        return f"character data {_excerpt(text)} directly inside <body/> (B-WRAP-04)"
    for child in elem:
        if not isinstance(child.tag, str):
            return "comment or processing instruction inside <body/> (B-WRAP-06)"
        tail = child.tail
        if tail and tail.strip(_XML_WHITESPACE):
            return f"character data {_excerpt(tail)} directly inside <body/> (B-WRAP-04)"
    return None


def _attribute_problem(fast: _FastPath, attrib: Mapping[str, str]) -> str | None:
    """None if every attribute is valid, else a reason (or ``_DELEGATE``)."""
    declared = fast.declared
    for name, value in attrib.items():
        decl = declared.get(name)
        if decl is None:
            if name.startswith(_XSI_PREFIX):
                return _DELEGATE
            wildcard = fast.wildcard
            # B-WRAP-06: an unknown unqualified attribute (or one in the httpbind namespace)
            # is not matched by the ##other wildcard.
            if wildcard is None or not wildcard.is_matching(name):
                return f"attribute {name!r} is not allowed on <body/>"
            if wildcard.process_contents == "skip":
                continue
            decl = fast.wildcard_decls.get(name)
            if decl is None:
                if wildcard.process_contents == "strict":
                    return f"attribute {name!r} has no declaration"
                continue  # lax: nothing to check it against
        if not decl.type.text_is_valid(value):
            return f"attribute {name}={value!r} is not a valid {_type_label(decl.type)}"
    for name in fast.required:
        if name not in attrib:
            return f"missing required attribute {name!r}"
    return None


def _compile_fast_path(schema: Any, body: Any) -> _FastPath | str:
    """The fast path's tables, or why the loaded schema is beyond what it understands."""
    if schema.XSD_VERSION != "1.0":
        return f"XSD version {schema.XSD_VERSION}"
    if body.abstract or body.identities:
        return "body is abstract or has identity constraints"
    body_type = body.type
    if not body_type.is_complex() or body_type.mixed or body_type.abstract:
        return "body type is not a concrete element-only complex type"
    content = body_type.content
    particles = list(content) if hasattr(content, "model") else []
    if (
        getattr(content, "model", None) != "sequence"
        or (content.min_occurs, content.max_occurs) != (1, 1)
        or len(particles) != 1
    ):
        return "body content is not a single sequence with one particle"
    any_element = particles[0]
    if (
        type(any_element).__name__ != "XsdAnyElement"
        or any_element.process_contents != "skip"
        or set(any_element.namespace) != {"##any"}
        or any_element.not_namespace
        or any_element.not_qname
        or (any_element.min_occurs, any_element.max_occurs) != (0, None)
    ):
        return "body content is not <xs:any namespace='##any' processContents='skip'/>"

    declared: dict[str, Any] = {}
    wildcard: Any | None = None
    for name, decl in body.attributes.items():
        if name is None:
            wildcard = decl
            continue
        if decl.fixed is not None or decl.use == "prohibited" or decl.type.is_notation():
            return f"attribute {name!r} is fixed, prohibited or a NOTATION"
        declared[name] = decl

    wildcard_decls: dict[str, Any] = {}
    if wildcard is not None and wildcard.process_contents != "skip":
        for name, decl in schema.maps.attributes.items():
            if name.startswith(_XSI_PREFIX) or not wildcard.is_matching(name):
                continue
            if decl.fixed is not None or decl.type.is_notation():
                return f"global attribute {name!r} is fixed or a NOTATION"
            wildcard_decls[name] = decl

    return _FastPath(
        declared=declared,
        wildcard=wildcard,
        wildcard_decls=wildcard_decls,
        required=frozenset(body.attributes.iter_required()),
    )


def _verify_local_copies(schema: Any, paths: Mapping[str, Path]) -> None:
    """Make sure the xbosh and xml declarations in use come from our own files."""
    problems = []
    for ns, path in paths.items():
        urls = [getattr(s, "url", None) for s in schema.maps.namespaces.get(ns, ())]
        if path.as_uri() not in urls:
            problems.append(f"schemas: {path.name} was not loaded for namespace {ns}")
    xml_lang = schema.maps.attributes.get(f"{{{XML_NS}}}lang")
    if xml_lang is None or xml_lang.schema.url != paths[XML_NS].as_uri():
        problems.append(f"schemas: xml:lang does not come from {paths[XML_NS]}")
    if problems:
        raise ConfigError(problems)


def _type_label(simple_type: Any) -> str:
    """``xs:positiveInteger`` for our ASCII-pinned integer types, else the type's name."""
    current = simple_type
    while current is not None:
        name = getattr(current, "prefixed_name", None) or getattr(current, "name", None)
        if isinstance(name, str) and name.startswith("xs:"):
            return name
        current = getattr(current, "base_type", None)
    return "value for its type"


def _describe(err: Any) -> str:
    """One xmlschema validation error as text, naming the XSD type a value failed."""
    reason = str(getattr(err, "reason", None) or getattr(err, "message", None) or err)
    # The failing component is the simple type itself or one of its facets.
    validator = getattr(err, "validator", None)
    for component in (validator, getattr(validator, "parent", None)):
        is_simple = getattr(component, "is_simple", None)
        if callable(is_simple) and is_simple():
            # Anonymous types (ver, type, condition) are explained by the reason itself.
            if getattr(component, "name", None) is None:
                return reason
            return f"{reason} (expected {_type_label(component)})"
    return reason


def _join(errors: list[str]) -> str:
    shown = "; ".join(errors[:_MAX_REASONS])
    more = len(errors) - _MAX_REASONS
    return f"{shown}; and {more} more" if more > 0 else shown


def _excerpt(text: str) -> str:
    stripped = text.strip(_XML_WHITESPACE)
    return repr(stripped[:40] + ("..." if len(stripped) > 40 else ""))
