"""The import-layers contract of boshd (docs/architecture.md, "Layers"), run by `make check`.

Every module under boshd/ is parsed with ``ast`` and each import of a boshd module is checked,
including imports inside functions and under ``TYPE_CHECKING``: a module may import its own
layer and the layers below it, never one above. From top to bottom:

=========  ==================================================================================
layer      modules
=========  ==================================================================================
entry      boshd.cli, boshd.__main__, boshd.daemon, boshd.admincli, boshd.configdoc (commands)
frontend   boshd.frontend (HTTP, WebSocket, admin API)
runtime    boshd.runtime (session actors and the registry)
upstream   boshd.upstream (connections to XMPP servers)
wire       boshd.wire (hardened XML parsing, schemas, WebSocket frames)
support    boshd (the package: its version), boshd.config, boshd.metrics, boshd.logjson,
           boshd.sdnotify: they import only the core and each other
core       boshd.core (pure: standard library only, no I/O, time passed in as ``now``)
=========  ==================================================================================
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "boshd"

#: Layer of each module prefix, from the bottom (0) up; the longest prefix wins.
LAYERS: dict[str, int] = {
    "boshd.core": 0,
    "boshd": 1,
    "boshd.config": 1,
    "boshd.metrics": 1,
    "boshd.logjson": 1,
    "boshd.sdnotify": 1,
    "boshd.wire": 2,
    "boshd.upstream": 3,
    "boshd.runtime": 4,
    "boshd.frontend": 5,
    "boshd.cli": 6,
    "boshd.__main__": 6,
    "boshd.daemon": 6,
    "boshd.admincli": 6,
    "boshd.configdoc": 6,
}
NAMES = {0: "core", 1: "support", 2: "wire", 3: "upstream", 4: "runtime", 5: "frontend"}

#: Imports that skip a layer downwards but still break the design: the front end reaches
#: the session cores and the upstream connection only through the runtime (issue 14).
FORBIDDEN: dict[str, tuple[str, ...]] = {
    "boshd.frontend": ("boshd.upstream", "boshd.core.bosh", "boshd.core.framing"),
}

#: What the pure core must never load, directly or through another module.
IMPURE = ("aiohttp", "lxml", "asyncio", "multidict", "yarl", "prometheus_client")
#: ... and never import itself: I/O and clocks (the standard library's xml.sax.saxutils loads
#: socket through urllib, so socket is only checked here).
IMPURE_DIRECT = (*IMPURE, "socket", "ssl", "select", "selectors", "time")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_package(path: Path) -> bool:
    return path.name == "__init__.py"


MODULES: dict[str, Path] = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer_of(module: str) -> int | None:
    """The layer of a boshd module (None if no prefix covers it)."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        layer = LAYERS.get(".".join(parts[:end]))
        if layer is not None:
            return layer
    return None


def all_imports(module: str, path: Path) -> set[str]:
    """Every module ``module`` imports, anywhere in its source, relative ones resolved."""
    package = module if is_package(path) else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # `from boshd.x import y` imports the module boshd.x.y when there is one.
            found.update(
                f"{target}.{alias.name}"
                for alias in node.names
                if f"{target}.{alias.name}" in MODULES
            )
    return found


def boshd_imports(module: str, path: Path) -> set[str]:
    """Every boshd module ``module`` imports, anywhere in its source."""
    found = all_imports(module, path)
    return {name for name in found if name == "boshd" or name.startswith("boshd.")}


def test_every_module_has_a_layer() -> None:
    """A new module under boshd/ must be placed in a layer before it can be imported (issue 14)."""
    assert len(MODULES) > 40
    unplaced = [name for name in MODULES if layer_of(name) is None]
    assert not unplaced, f"add these to LAYERS in tests/unit/test_layers.py: {unplaced}"


def test_nothing_imports_a_layer_above_its_own() -> None:
    """Frontend -> runtime -> upstream -> wire -> support -> core: no import goes up (issue 14)."""
    upward = []
    for name, path in MODULES.items():
        mine = layer_of(name)
        assert mine is not None
        for imported in sorted(boshd_imports(name, path)):
            theirs = layer_of(imported)
            assert theirs is not None, f"{name} imports {imported}, which is no boshd module"
            if theirs > mine:
                upward.append(f"{name} ({NAMES.get(mine, 'entry')}) imports {imported}")
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_front_end_reaches_sessions_and_servers_only_through_the_runtime() -> None:
    """The front end builds no session core and parses nothing with upstream code (issue 14)."""
    bad = []
    for name, path in MODULES.items():
        for prefix, forbidden in FORBIDDEN.items():
            if name != prefix and not name.startswith(prefix + "."):
                continue
            for imported in boshd_imports(name, path):
                if any(imported == f or imported.startswith(f + ".") for f in forbidden):
                    bad.append(f"{name} imports {imported}")
    assert not bad, "\n".join(sorted(bad))


def test_the_contract_sees_imports_inside_functions_and_relative_ones(tmp_path: Path) -> None:
    """The checker finds lazy, relative and from-package imports, so none slips by (issue 14)."""
    source = tmp_path / "x.py"
    source.write_text(
        "import os\n"
        "def f():\n"
        "    from boshd.frontend import app\n"
        "    from ..runtime.actor import SessionActor\n"
        "    import boshd.upstream.routing\n"
    )
    found = boshd_imports("boshd.core.x", source)
    assert found >= {
        "boshd.frontend",
        "boshd.frontend.app",
        "boshd.runtime.actor",
        "boshd.upstream.routing",
    }
    assert all(layer_of(name) == 5 for name in found if name.startswith("boshd.frontend"))


def test_core_imports_no_io_and_no_clock() -> None:
    """No core module imports asyncio, aiohttp, lxml, sockets or time: I/O stays outside and
    time comes in as ``now`` (architecture guide, issue 14)."""
    bad = []
    for name, path in MODULES.items():
        if layer_of(name) != 0:
            continue
        for imported in all_imports(name, path):
            if imported.split(".")[0] in IMPURE_DIRECT:
                bad.append(f"{name} imports {imported}")
    assert not bad, "\n".join(sorted(bad))


def test_core_loads_no_io_library_in_a_fresh_interpreter() -> None:
    """Importing every core module loads no asyncio, aiohttp or lxml and no boshd module
    outside boshd.core: the core stays pure (issue 14, architecture guide)."""
    core = sorted(name for name in MODULES if layer_of(name) == 0)
    script = (
        "import json, sys\n"
        + "".join(f"import {name}\n" for name in core)
        + "print(json.dumps(sorted(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    loaded = json.loads(out)
    impure = [m for m in loaded if m.split(".")[0] in IMPURE]
    assert not impure, f"boshd.core loads {impure}"
    outside = [m for m in loaded if m.startswith("boshd.") and layer_of(m) != 0]
    assert not outside, f"boshd.core loads {outside}"
