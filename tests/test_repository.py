"""The repository explains itself: cited documents are inside it, test modules stand alone."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("core", "domains", "retrieval_db", "benchmarks", "tests", "configs")
CITED_DOC = re.compile(r"\bdocs/[\w./-]+\.md\b")


def text_files() -> list[Path]:
    files = [ROOT / name for name in ("README.md", "Makefile", "pyproject.toml")]
    for top in SOURCES:
        for suffix in ("*.py", "*.yaml", "*.md"):
            files += sorted((ROOT / top).rglob(suffix))
    return [path for path in files if path.is_file()]


def test_every_cited_document_is_in_the_repository():
    cited = {
        (path.relative_to(ROOT), doc)
        for path in [*text_files(), *(ROOT / "docs").glob("*.md")]
        for doc in CITED_DOC.findall(path.read_text(encoding="utf-8"))
    }
    assert cited, "nothing cites docs/ any more: update this test"
    missing = sorted(f"{source}: {doc}" for source, doc in cited if not (ROOT / doc).is_file())
    assert not missing, missing


def test_nothing_cites_a_design_document_outside_the_repository():
    outside = re.compile(r"DESIGN\.md|STYLE\.md")
    this_file = Path(__file__).resolve()
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in text_files()
        if path.resolve() != this_file
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        if outside.search(line)
    ]
    assert not offenders, f"move the facts into docs/ and cite that instead: {offenders}"


def test_test_modules_import_only_the_shared_helpers_and_test_plugins():
    """A test module (or conftest) that imports another one drags its fixtures and tests along;
    shared code lives in tests/helpers.py and test-only domains in tests/plugins/."""
    allowed = ("tests.helpers", "tests.plugins")
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            offenders += [
                f"{path.relative_to(ROOT)}: {name}"
                for name in names
                if name.startswith("tests.") and not name.startswith(allowed)
            ]
    assert not offenders, offenders
