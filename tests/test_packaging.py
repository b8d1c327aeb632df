"""The distribution's shape: every package folder is listed in pyproject, and import boundaries hold."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ROOTS = {"packager": "mlpk.packager", "runtimes": "mlpk.runtimes", "targets": "mlpk.targets"}


def test_every_package_folder_is_listed() -> None:
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, name in ROOTS.items():
        for init in (REPO / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO / folder)
            found.add(".".join([name, *rel.parts]))
    assert found == listed


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_click_only_in_the_cli() -> None:
    for path in (REPO / "packager").rglob("*.py"):
        if "cli" in path.relative_to(REPO / "packager").parts:
            continue
        assert not any(n.split(".")[0] == "click" for n in _imports(path)), path


def test_runtimes_never_import_the_packager() -> None:
    for path in (REPO / "runtimes").rglob("*.py"):
        assert not any(n.startswith("mlpk.packager") for n in _imports(path)), path


def test_targets_hold_data_not_code() -> None:
    code = [p for p in (REPO / "targets").rglob("*.py") if p.name != "__init__.py"]
    assert code == []
