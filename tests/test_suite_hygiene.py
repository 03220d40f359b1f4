"""Rules for the test suite itself, checked on its source: nothing skips silently, every marker is declared."""
from __future__ import annotations

import ast
import configparser
from pathlib import Path

TESTS = Path(__file__).parent
REPO = TESTS.parent


def _test_sources() -> dict[str, ast.Module]:
    return {path.name: ast.parse(path.read_text(), filename=str(path)) for path in sorted(TESTS.glob("*.py"))}


def _calls(tree: ast.AST, attribute: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == attribute:
            yield node


def test_no_import_skips():
    """Every dependency is in the lock and the project's own modules must import: a missing module is an error,
    never a skipped test (``pytest.importorskip`` turned an import bug into silent skips)."""
    found = [f"{name}:{call.lineno}" for name, tree in _test_sources().items()
             for call in _calls(tree, "importorskip")]
    assert found == []


def test_every_marker_is_declared_and_test_fast_skips_only_slow():
    config = configparser.ConfigParser()
    config.read(REPO / "pytest.ini")
    declared = {line.split(":")[0].strip() for line in config["pytest"]["markers"].strip().splitlines()}
    assert declared == {"integration", "slow"}
    used = set()
    for tree in _test_sources().values():
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                    and node.value.attr == "mark" and node.attr not in ("parametrize", "usefixtures")):
                used.add(node.attr)
    assert used <= declared
    makefile = (REPO / "Makefile").read_text()
    assert '$(PY) -m pytest -m "not slow"' in makefile  # test-fast keeps the fixture equivalence tests
