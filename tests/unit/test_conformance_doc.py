"""docs/conformance.md stays honest: every cited test exists and names the ID it is cited for,
and every requirement has a test or a note."""

from __future__ import annotations

import re
from pathlib import Path

from tests.conformance import (
    DEFAULT_REQUIREMENTS,
    index_tests,
    read_notes,
    read_requirements,
    render,
    requirements_from_doc,
)

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "conformance.md"
ROW = re.compile(
    r"^\| (?P<id>[A-Z]+(?:-[A-Z]+)?-\d+) \| .* \| (?P<status>[a-zA-Z/]+) \| (?P<cells>.*) \|$"
)


def rows() -> list[re.Match[str]]:
    found = [m for line in DOC.read_text().splitlines() if (m := ROW.match(line))]
    assert len(found) == 278, f"expected 278 requirement rows, found {len(found)}"
    return found


def test_every_requirement_has_a_test_or_a_note() -> None:
    """No row is MISSING: each ID has tests, or an n/a/deviation note with a reason."""
    notes = read_notes()
    for m in rows():
        assert m.group("status") != "MISSING", f"{m.group('id')} has no test and no note"
        if m.group("status") in ("n/a", "deviation", "partial"):
            assert notes.get(m.group("id"), {}).get("text"), m.group("id")


def test_cited_tests_exist_and_name_the_id() -> None:
    """Each test the document cites exists and names that requirement ID in its docstring."""
    index = index_tests()
    for m in rows():
        for test in re.findall(r"`(tests/[^`]+::[a-zA-Z0-9_]+)`", m.group("cells")):
            assert test in index.get(m.group("id"), []), f"{test} does not name {m.group('id')}"


def test_document_is_up_to_date() -> None:
    """docs/conformance.md is what `python -m tests.conformance` renders from the committed
    tests (the requirement list comes from the shared spec when it is at hand, otherwise
    from the document's own rows)."""
    if DEFAULT_REQUIREMENTS.exists():
        requirements = read_requirements(DEFAULT_REQUIREMENTS)
        assert [r.id for r in requirements] == [r.id for r in requirements_from_doc()]
    else:
        requirements = requirements_from_doc()
    assert DOC.read_text() == render(requirements), (
        "regenerate: python -m tests.conformance > docs/conformance.md"
    )
