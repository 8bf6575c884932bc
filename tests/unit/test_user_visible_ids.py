"""Requirement IDs in what users see (issue 16 item 5): log lines, error texts sent to clients
and CLI output may name an ID (``C-XML-01`` in a parse error) only if the repository defines
it: docs/conformance.md has a row for each, with the rule it stands for. IDs in comments and
docstrings are for developers and are not checked here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ID = re.compile(r"\b(?:[A-Z]-[A-Z]{2,6}-\d{2}|A-\d{1,2})\b")


def defined_ids() -> set[str]:
    text = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| ([A-Z]+(?:-[A-Z]+)?-\d+) \|", text, flags=re.MULTILINE))


def user_visible_strings(path: Path) -> list[tuple[int, str]]:
    """String constants of ``path`` that are not docstrings (f-string parts included)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant):
                docstrings.add(id(first.value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and id(node) not in docstrings
    ]


def test_ids_users_see_are_defined_in_the_repository() -> None:
    """Every requirement ID in a string boshd can show a user (not a docstring or comment)
    has its row in docs/conformance.md (issue 16 item 5)."""
    defined = defined_ids()
    assert len(defined) == 278
    shown = {
        f"{path.relative_to(ROOT)}:{line}": found
        for path in sorted((ROOT / "boshd").rglob("*.py"))
        for line, text in user_visible_strings(path)
        if (found := set(ID.findall(text)))
    }
    assert shown, "the scan found no ID at all: the pattern is broken"
    undefined = {where: ids - defined for where, ids in shown.items() if ids - defined}
    assert not undefined, undefined
