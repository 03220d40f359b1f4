"""The layering of docs/ARCHITECTURE.md, checked on every module's imports (ast, nothing is imported).

Layers, lowest first; a module may import its own package and any lower layer, never a higher one, and never a
sibling package of its own layer:

    data_util.classes (the class contract)
    configs
    data_util
    models
    helpers.evaluation
    helpers.training | helpers.predictions          (siblings: no imports between them)
    helpers.errors (user-error messages) | helpers.resource_checks (release-file checks)
    helpers.experiment | helpers.demo_recipe | helpers.env_check | helpers.hear_validate
    ex_* experiments | inference | hear_api | download_resources   (command lines)
    bench                                               (benchmarks time the command lines too)

Function-level imports are allowed only with a reason on the line (or the line above): ``# lazy: ...``.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = (
    ("data_util.classes",),
    ("configs",),
    ("data_util",),
    ("models",),
    ("helpers.evaluation",),
    ("helpers.training", "helpers.predictions"),
    ("helpers.errors", "helpers.resource_checks"),
    ("helpers.experiment", "helpers.demo_recipe", "helpers.env_check", "helpers.hear_validate"),
    ("ex_stage1", "ex_stage2", "ex_audioset_strong", "ex_downstream", "inference", "hear_api", "download_resources"),
    ("bench",),
)
PROJECT_ROOTS = {"configs", "data_util", "models", "helpers", "ex_stage1", "ex_stage2", "ex_audioset_strong",
                 "ex_downstream", "inference", "hear_api", "download_resources", "bench"}
LAZY_MARK = "# lazy:"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _source_files() -> list[Path]:
    files = [p for p in REPO.rglob("*.py") if not any(part.startswith(".") for part in p.relative_to(REPO).parts)]
    return sorted(p for p in files if p.relative_to(REPO).parts[0] != "tests")


def _group(module: str) -> tuple[int, str] | None:
    """(layer index, group) of the longest group prefix of ``module``; None for third-party modules."""
    best = None
    for index, groups in enumerate(LAYERS):
        for group in groups:
            if (module == group or module.startswith(group + ".")) and (best is None or len(group) > len(best[1])):
                best = (index, group)
    return best


def _imports(path: Path) -> list[tuple[ast.stmt, str, bool]]:
    """(node, imported module, inside a function) of every import of a project module in ``path``."""
    tree = ast.parse(path.read_text())
    in_function = {id(node) for fn in ast.walk(tree) if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef))
                   for node in ast.walk(fn) if isinstance(node, (ast.Import, ast.ImportFrom))}
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            names = [f"{module}.{alias.name}" for alias in node.names] if module in ("helpers", "models",
                                                                                       "data_util") else [module]
        else:
            continue
        found += [(node, name, id(node) in in_function) for name in names]
    return found


def _violations() -> list[str]:
    problems = []
    for path in _source_files():
        me = _group(_module_name(path))
        if me is None:
            continue
        for node, imported, _ in _imports(path):
            if imported.split(".")[0] not in PROJECT_ROOTS:
                continue
            other = _group(imported)
            if other is None or other[1] == me[1]:
                continue
            if other[0] > me[0]:
                problems.append(f"{path.relative_to(REPO)}:{node.lineno} imports {imported} (upward: "
                                f"{me[1]} is below {other[1]})")
            elif other[0] == me[0]:
                problems.append(f"{path.relative_to(REPO)}:{node.lineno} imports {imported} (sideways: "
                                f"{me[1]} and {other[1]} are siblings)")
    return problems


def test_imports_point_one_way():
    assert _violations() == []


def test_function_level_imports_say_why():
    missing = []
    for path in _source_files():
        lines = path.read_text().splitlines()
        tree = ast.parse("\n".join(lines))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    here, above = lines[node.lineno - 1], lines[node.lineno - 2].strip()
                    if LAZY_MARK not in here and not above.startswith(LAZY_MARK):
                        missing.append(f"{path.relative_to(REPO)}:{node.lineno}: {here.strip()}")
    assert missing == [], "function-level imports without a '# lazy: <reason>' comment:\n" + "\n".join(missing)


@pytest.mark.parametrize("source, expected", [
    ("models/x.py", "models/x.py:1 imports helpers.training.system (upward: models is below helpers.training)"),
    ("helpers/predictions/x.py", "helpers/predictions/x.py:1 imports helpers.training.system (sideways: "
                                 "helpers.predictions and helpers.training are siblings)"),
])
def test_the_check_names_an_upward_or_sideways_import(tmp_path, monkeypatch, source, expected):
    """The checker itself: a planted bad import in a copy of the layout is reported with file, line and reason."""
    fake = tmp_path / source
    fake.parent.mkdir(parents=True)
    fake.write_text("from helpers.training.system import SEDSystem\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert _violations() == [expected]
