"""Type-check mlpk.packager and mlpk.runtimes with mypy (configured in pyproject.toml's [tool.mypy]); tests/run.sh
runs it before the suite, and so does CI. Exits with mypy's status.

The import names live under `mlpk` while the folders are packager/, runtimes/ and targets/ (pyproject.toml maps
them for setuptools), so mypy is shown the same tree through links: .typecheck/mlpk/packager -> packager, and so on.
Errors name the files by those links.

    .venv/bin/python tests/typecheck.py
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TREE = REPO / ".typecheck"
FOLDERS = ("packager", "runtimes", "targets")


def link_tree() -> Path:
    """.typecheck/mlpk/FOLDER -> ../../FOLDER for each mapped folder (made once, kept between runs)."""
    package = TREE / "mlpk"
    package.mkdir(parents=True, exist_ok=True)
    for folder in FOLDERS:
        link = package / folder
        if not link.is_symlink():
            link.symlink_to(Path("..", "..", folder))
    return TREE


def main() -> int:
    tree = link_tree()
    env = {**os.environ, "MYPYPATH": str(tree)}
    command = [sys.executable, "-m", "mypy", "--config-file", str(REPO / "pyproject.toml"),
               "--cache-dir", str(tree / "cache"), "-p", "mlpk.packager", "-p", "mlpk.runtimes"]
    return subprocess.run(command, cwd=REPO, env=env, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
