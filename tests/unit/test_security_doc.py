"""docs/security.md names, for each promise, the test that proves it (issue 13): every such
name must be a test that exists, so a renamed or deleted test cannot leave a promise behind."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOC = ROOT / "docs" / "security.md"
# `tests/dir/file.py::test_name` or, after one of those in the same cell, `::test_name`; a
# parametrised name may carry its ids in brackets.
REFERENCE = re.compile(r"`(tests/[\w/]+\.py)?(?:::(\w+))?(?:\[[^\]`]*\])?`")


@cache
def functions(path: Path) -> frozenset[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return frozenset(
        node.name
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    )


def references() -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = []
    current: str | None = None
    for line in DOC.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith(("| ", "#", "* ")):
            current = None  # a new table row, paragraph, heading or bullet
        for match in REFERENCE.finditer(line):
            path, name = match.group(1), match.group(2)
            if path is None and name is None:
                continue
            if path is not None:
                current = path
            assert current is not None, f"'::{name}' without a file before it: {line[:120]}"
            found.append((current, name))
    return found


def test_every_test_named_in_security_md_exists() -> None:
    """Each `tests/...py::test` (or `::test` after one) in docs/security.md is a test function
    in that file (issue 13 acceptance: each promise names the test that proves it)."""
    refs = references()
    assert len(refs) > 100, "the document names far more tests than that"
    missing = []
    for path, name in refs:
        file = ROOT / path
        if not file.is_file():
            missing.append(path)
        elif name is not None and name not in functions(file):
            missing.append(f"{path}::{name}")
    assert not missing, f"docs/security.md names tests that do not exist: {missing}"
