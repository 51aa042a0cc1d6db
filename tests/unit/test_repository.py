"""The repository stands on its own: what it cites is in it."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
# Where code, docs and tests live, and the top-level files shipped with them.
SEARCHED = ("agent", "bench", "tests", "docs", "README.rst", "Dockerfile", "pyproject.toml")
# A section sign or a file name after DESIGN: a citation of a design document the repository does not hold.
OUTSIDE_DESIGN = re.compile(rb"DESIGN\s*(?:\xc2\xa7|\.md)")


def _files() -> list[Path]:
    found: list[Path] = []
    for name in SEARCHED:
        top = REPO / name
        found += [top] if top.is_file() else [p for p in top.rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    return found


def test_nothing_cites_a_design_document_outside_the_repository() -> None:
    """Docstrings, docs and tests cite docs/architecture.rst by section name instead."""
    citing = [str(path.relative_to(REPO)) for path in _files() if OUTSIDE_DESIGN.search(path.read_bytes())]
    assert citing == [], f"cite a section of docs/architecture.rst instead, in: {', '.join(citing)}"


def test_the_search_covers_the_code_docs_and_tests() -> None:
    """The check above reads real files, including this one."""
    files = set(_files())
    assert {REPO / "README.rst", REPO / "docs" / "architecture.rst", Path(__file__).resolve()} <= files
    assert any(path.suffix == ".py" and path.parent.name == "worker" for path in files)
