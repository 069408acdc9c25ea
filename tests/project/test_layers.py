"""The shape of the library, checked from its source (AST only: nothing is imported).

Layers, lowest first (docs/architecture.md): a module may import its own package and the packages
of lower layers, never a package of its own layer or a higher one. Also: no cycle between packages,
and modules and functions stay small (with an explicit list of today's exceptions).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from tests.helpers import REPO

ROOT = REPO
PACKAGE = ROOT / "geoindex"

# Lowest first. The first three layers are the top-level modules every layer may use: they import
# no torch, no FAISS and nothing above them. The root package (geoindex/__init__.py) is the public facade: it
# loads names from every layer on first use, and nothing inside the library imports it.
LAYERS = [
    {"errors", "constants", "hashing", "libc"},
    {"atomic"},
    {"workstate"},
    {"cells"},
    {"encoders"},
    {"index"},
    {"store"},
    {"pipeline", "locate", "maps"},
    {"photos", "archive", "train"},
    {"serve"},
    {"cli"},
    {"__main__"},
]

# (importing module, imported module) pairs allowed against the layers, each with its reason.
EXCEPTIONS = {
    ("geoindex.pipeline.self_check", "geoindex.locate.rerank"):
        "the build's self-check re-ranks its own gallery exactly as a query does: one re-ranker, not two",
}

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80
# Today's long functions (others are editing them; the lead tightens this list). New code may not
# add to it: split the function instead.
LONG_FUNCTIONS: dict[str, str] = {}  # none today
LONG_MODULES: dict[str, str] = {}  # none today


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path) -> set[str]:
    """Every geoindex module ``name`` imports, at the top or inside functions."""
    found = set()
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
    return {m for m in found if m == "geoindex" or m.startswith("geoindex.")}


def _package(module: str) -> str:
    """geoindex.locate.options -> locate; geoindex.errors -> errors; geoindex -> the facade."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<geoindex>"


def _layer(package: str) -> int:
    for i, layer in enumerate(LAYERS):
        if package in layer:
            return i
    raise AssertionError(f"package or module geoindex.{package} is in no layer: add it to LAYERS in {__file__}")


def _graph() -> dict[str, set[str]]:
    return {name: _imports(name, path) for name, path in _modules().items()}


def test_every_package_has_a_layer():
    for name in _modules():
        if name != "geoindex":
            _layer(_package(name))


def test_imports_follow_the_layers():
    bad = []
    for name, imported in _graph().items():
        if name == "geoindex":
            continue
        own = _package(name)
        for target in imported:
            other = _package(target)
            if other == own or (name, target) in EXCEPTIONS:
                continue
            if other == "<geoindex>" or _layer(other) >= _layer(own):
                bad.append(f"{name} imports {target} (layer {_layer(own)} -> "
                           f"{'the facade' if other == '<geoindex>' else _layer(other)})")
    assert not bad, "imports against the layers (lowest first: " + " < ".join(
        "/".join(sorted(layer)) for layer in LAYERS) + "):\n" + "\n".join(sorted(bad))


def test_exceptions_are_still_needed():
    graph = _graph()
    stale = [pair for pair in EXCEPTIONS if pair[1] not in graph.get(pair[0], set())]
    assert not stale, f"remove these from EXCEPTIONS, the import is gone: {stale}"


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node):
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(edges):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_package_cycles():
    edges: dict[str, set[str]] = {}
    for name, imported in _graph().items():
        if name != "geoindex":
            edges.setdefault(_package(name), set()).update(
                p for p in map(_package, imported) if p not in (_package(name), "<geoindex>"))
    assert _cycle(edges) is None, f"packages import each other: {' -> '.join(_cycle(edges))}"


def test_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": {"c"}}) is None


def test_index_and_store_import_no_torch():
    """EMBED_DIM and file hashing live in torch-free modules (geoindex.constants, geoindex.hashing)."""
    graph, modules = _graph(), _modules()
    base = LAYERS[0] | LAYERS[1] | LAYERS[2]
    for name in graph:
        package = _package(name)
        if package in ("index", "store") or package in base:
            torchy = {t for t in graph[name] if _package(t) == "encoders"}
            assert not torchy, f"{name} imports {torchy}"
        if package in base:
            assert not re.search(r"^\s*(import|from) (torch|faiss)\b", modules[name].read_text(), re.M), name


def test_module_and_function_sizes():
    report, bad = [], []
    for name, path in _modules().items():
        lines = len(path.read_text().splitlines())
        report.append((lines, name))
        if lines > MAX_MODULE_LINES and name not in LONG_MODULES:
            bad.append(f"{name}: {lines} lines (over {MAX_MODULE_LINES}): split it")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                size = node.end_lineno - node.lineno + 1
                key = f"{name}:{node.name}"
                if size > MAX_FUNCTION_LINES and key not in LONG_FUNCTIONS:
                    bad.append(f"{key}: {size} lines (over {MAX_FUNCTION_LINES}): split it")
    print("largest modules:", ", ".join(f"{n} {lines}" for lines, n in sorted(report, reverse=True)[:10]))
    assert not bad, "\n".join(bad)


def test_size_allow_list_is_not_stale():
    modules = _modules()
    for key in LONG_FUNCTIONS:
        name, function = key.split(":")
        sizes = [n.end_lineno - n.lineno + 1 for n in ast.walk(ast.parse(modules[name].read_text()))
                 if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n.name == function]
        assert sizes and max(sizes) > MAX_FUNCTION_LINES, f"{key} is short now: remove it from LONG_FUNCTIONS"
    for name in LONG_MODULES:
        assert len(modules[name].read_text().splitlines()) > MAX_MODULE_LINES, f"remove {name} from LONG_MODULES"


@pytest.mark.parametrize("source, expected", [
    ("from geoindex.locate import options", {"geoindex.locate"}),
    ("from . import options", {"geoindex.photos"}),
    ("from ..cells import region", {"geoindex.cells"}),
    ("import geoindex.index.io as io\nimport numpy", {"geoindex.index.io"}),
])
def test_imports_are_read_with_relative_forms(tmp_path, source, expected):
    path = tmp_path / "m.py"
    path.write_text(source)
    assert _imports("geoindex.photos.m", path) == expected


def _layout_tree() -> set[str]:
    """The paths the tree under docs/architecture.md's "## Layout" names (indentation = nesting)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    block = text.split("## Layout", 1)[1].split("```", 2)[1]
    named, stack = set(), []  # stack of (indent, folder)
    for line in block.splitlines():
        match = re.match(r"^( *)([\w.]+/|[\w.]+\.py)(\s|$)", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        path = "".join(folder for _, folder in stack) + match.group(2)
        named.add(path)
        if path.endswith("/"):
            stack.append((indent, match.group(2)))
    return named


def test_architecture_doc_names_every_module():
    named = _layout_tree()
    modules = {str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py") if p.name != "__init__.py"}
    missing = sorted(modules - named)
    stale = sorted(p for p in named if p.startswith("geoindex/") and p.endswith(".py") and p not in modules)
    assert not missing and not stale, (f"docs/architecture.md's layout misses {missing} and names "
                                      f"{stale}, which do not exist: keep the tree in step with geoindex/")


def test_layout_tree_reads_nesting():
    assert "geoindex/photos/evidence.py" in _layout_tree() and "geoindex/cells/region.py" in _layout_tree()


def test_index_and_store_load_without_torch():
    """What the AST test promises, at run time: the index and store layers (and the query options)
    load without torch, so a reader of index directories does not pay for it."""
    import subprocess
    import sys

    modules = sorted(n for n in _modules() if _package(n) in ("index", "store")) + ["geoindex.locate.options"]
    code = f"import sys\nfor m in {modules!r}: __import__(m)\nprint('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.strip() == "False", out.stderr
