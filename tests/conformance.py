"""Generate docs/conformance.md: every requirement ID, and the tests that check it.

Tests name the requirement IDs they check in their one-line docstrings (``(B-RID-03)``,
``(C-HDR-01..07)``, ``(B-ERR-01/02)``). This script reads the requirement list
(``../shared/spec/requirements.md`` by default), finds those IDs in every test's docstring,
adds the notes from ``docs/conformance-notes.toml`` (not applicable, deliberate deviation,
covered elsewhere) and writes the table. ``tests/unit/test_conformance_doc.py`` checks that each
test the document cites exists and names the ID, and that every row has a test or a note.

    python -m tests.conformance [--requirements PATH] > docs/conformance.md
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import tomllib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_REQUIREMENTS = ROOT.parent / "shared" / "spec" / "requirements.md"
NOTES = ROOT / "docs" / "conformance-notes.toml"

_REQ_LINE = re.compile(r"^\*\*(?P<id>[A-Z]+(?:-[A-Z]+)?-\d+)\*\* · (?P<rest>.*)$")
_ID = re.compile(r"\b([A-Z]-(?:[A-Z]+-)?)(\d{2})((?:(?:\.\.|/|-)\d{2})*)")
SECTIONS = [
    ("B-", "A. XEP-0124 BOSH"),
    ("X-", "B. XEP-0206 XMPP over BOSH"),
    ("W-", "C. RFC 7395 XMPP over WebSocket"),
    ("D-", "D. XEP-0156 discovery"),
    ("C-", "E. RFC 6120 rules for the bridge"),
    ("G-", "F. Derived and operational"),
]


@dataclass(frozen=True)
class Requirement:
    id: str
    level: str
    text: str


def read_requirements(path: Path) -> list[Requirement]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = _REQ_LINE.match(line)
        if m:
            parts = [p.strip() for p in m.group("rest").split(" · ")]
            level, text = (parts[-2], parts[-1]) if len(parts) >= 2 else ("", parts[-1])
            short = text.split(". ")[0].rstrip(".")
            if len(short) > 110:
                short = short[:107].rstrip() + "..."
            out.append(Requirement(m.group("id"), level, short))
    return out


def expand_ids(text: str) -> set[str]:
    """IDs named in a docstring, with ranges (C-HDR-01..07) and lists (B-ERR-01/02)."""
    found: set[str] = set()
    for prefix, first, rest in _ID.findall(text):
        numbers = [int(first)]
        for sep, num in re.findall(r"(\.\.|/|-)(\d{2})", rest):
            n = int(num)
            if sep == "/":
                numbers.append(n)
            else:  # a range
                numbers.extend(range(numbers[-1] + 1, n + 1))
        for n in numbers:
            found.add(f"{prefix}{n:02d}")
    return found


def requirements_from_doc(path: Path = ROOT / "docs" / "conformance.md") -> list[Requirement]:
    """The requirement rows already in docs/conformance.md (when the spec is not at hand)."""
    row = re.compile(r"^\| ([A-Z]+(?:-[A-Z]+)?-\d+) \| (.*?) \| (.*?) \| [a-zA-Z/]+ \| .*\|$")
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        m = row.match(line)
        if m:
            out.append(Requirement(m.group(1), m.group(2), m.group(3).replace("\\|", "|")))
    return out


def committed_test_files(root: Path = ROOT) -> list[Path]:
    """Committed test modules (git ls-files), so the document never cites uncommitted work."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "tests"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        return sorted((root / "tests").rglob("test_*.py"))
    return sorted(
        root / p for p in listed if Path(p).name.startswith("test_") and p.endswith(".py")
    )


def index_tests(root: Path = ROOT) -> dict[str, list[str]]:
    """requirement ID -> ['tests/x/test_y.py::test_name', ...]"""
    index: dict[str, list[str]] = defaultdict(list)
    for path in committed_test_files(root):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        rel = path.relative_to(root).as_posix()
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith(
                "test_"
            ):
                for rid in expand_ids(ast.get_docstring(node) or ""):
                    index[rid].append(f"{rel}::{node.name}")
    return index


def read_notes(path: Path = NOTES) -> dict[str, dict[str, str]]:
    if not path.exists():
        return {}
    with path.open("rb") as fh:
        return {k: dict(v) for k, v in tomllib.load(fh).items()}


def render(requirements: list[Requirement]) -> str:
    index = index_tests()
    notes = read_notes()
    lines = [
        "# Conformance",
        "",
        "Every requirement of `shared/spec/requirements.md` (278 IDs), with the tests that check",
        "it, or why it does not apply, or the documented deviation. Tests name the IDs they",
        "check in their docstrings; this file is generated by `python -m tests.conformance`",
        "and `tests/unit/test_conformance_doc.py` checks that every cited test exists and names",
        "the ID. Status: **tested**, **deviation** (a deliberate, documented choice; see",
        "`docs/deviations.md`), **n/a** (does not apply to boshd, with the reason).",
        "",
    ]
    counts: dict[str, int] = defaultdict(int)
    body: list[str] = []
    for prefix, title in SECTIONS:
        rows = [r for r in requirements if r.id.startswith(prefix)]
        if not rows:
            continue
        body += [
            f"## {title}",
            "",
            "| ID | level | requirement | status | tests / notes |",
            "| --- | --- | --- | --- | --- |",
        ]
        for r in rows:
            tests = index.get(r.id, [])
            note = notes.get(r.id, {})
            status = note.get("status") or ("tested" if tests else "MISSING")
            if tests and status not in ("deviation", "partial"):
                status = "tested"
            counts[status] += 1
            cells = [f"`{t}`" for t in tests[:4]]
            if len(tests) > 4:
                cells.append(f"and {len(tests) - 4} more")
            if note.get("text"):
                cells.append(note["text"])
            text = r.text.replace("|", "\\|")
            body.append(f"| {r.id} | {r.level} | {text} | {status} | {'<br>'.join(cells)} |")
        body.append("")
    summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    lines += [f"Summary: {summary}.", ""]
    return "\n".join(lines + body)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requirements", type=Path, default=DEFAULT_REQUIREMENTS)
    args = parser.parse_args(argv)
    if args.requirements.exists():
        requirements = read_requirements(args.requirements)
    else:
        requirements = requirements_from_doc()
    sys.stdout.write(render(requirements))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
