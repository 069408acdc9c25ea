"""The tests' own layout (docs/testing.md): a folder per library package, shared code only in
``tests/helpers/`` and ``conftest.py`` files, never one test module importing another."""

from __future__ import annotations

import ast

from tests.helpers import REPO

TESTS = REPO / "tests"
NOT_PACKAGES = {"helpers", "project"}  # shared helpers; the checks on the project as a whole


def test_every_test_folder_mirrors_a_package():
    folders = {p.name for p in TESTS.iterdir() if p.is_dir() and p.name != "__pycache__"}
    packages = {p.name for p in (REPO / "geoindex").iterdir() if (p / "__init__.py").is_file()}
    assert folders - NOT_PACKAGES <= packages, f"test folders with no package of that name: {folders - NOT_PACKAGES - packages}"


def _test_module_imports(path) -> list[str]:
    """The test modules (``test_*``) or conftests that ``path`` imports."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.ImportFrom):
            names = [node.module or ""] + [f"{node.module or ''}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        found += [n for n in names if any(part.startswith("test_") or part == "conftest" for part in n.split("."))]
    return found


def test_no_test_imports_another_test_module():
    offenders = {str(p.relative_to(REPO)): hits for p in sorted(TESTS.rglob("*.py"))
                 if (hits := _test_module_imports(p))}
    assert not offenders, f"move shared code to tests/helpers/ or a conftest fixture: {offenders}"


def test_the_import_check_sees_both_forms(tmp_path):
    bad = tmp_path / "test_x.py"
    bad.write_text("from tests.archive.test_archive import _photo\nimport tests.conftest\nfrom . import helpers\n")
    assert _test_module_imports(bad) == ["tests.archive.test_archive", "tests.archive.test_archive._photo",
                                         "tests.conftest"]
