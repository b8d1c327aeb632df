"""The distribution's shape: every package folder is listed in pyproject, and targets/ holds data."""

from __future__ import annotations

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


# The import boundaries (click only in packager/cli, runtimes/ never importing mlpk.packager, heavy frameworks never
# imported at module level) are ruff rules now (pyproject.toml and runtimes/.ruff.toml, flake8-tidy-imports), which
# tests/run.sh checks before the suite; tests/runtime/test_imports.py keeps what ruff cannot say (the runtime's
# allowed imports, and what importing it loads).


def test_targets_hold_data_not_code() -> None:
    code = [p for p in (REPO / "targets").rglob("*.py") if p.name != "__init__.py"]
    assert code == []


def test_a_built_wheel_carries_the_grpc_descriptors(tmp_path: Path) -> None:
    """A wheel (as users install the package, not this editable checkout) holds the descriptor set setup.py
    compiles from runtimes/proto/*.proto, and no .proto nor generated module; its runtime serves the published
    service's methods and imports in one process beside tritonclient.grpc."""
    import subprocess
    import sys
    import zipfile

    import shutil

    source = tmp_path / "source"  # a copy, so the build's own folders stay out of the checkout
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"], cwd=REPO,
                            check=True, capture_output=True, text=True).stdout.split("\0")
    for rel in filter(None, listed):
        if (REPO / rel).is_file():
            (source / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / rel, source / rel)
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path / "dist"),
                    str(source)], check=True, capture_output=True, timeout=600)
    wheel = next((tmp_path / "dist").glob("*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    assert "mlpk/runtimes/proto/grpc_predict_v2.binpb" in names
    assert not [n for n in names if n.endswith((".proto", "_pb2.py", "_pb2_grpc.py"))]
    code = ("import tritonclient.grpc\n"
            "from mlpk.runtimes import proto\n"
            "assert proto.__file__.startswith(sys.argv[1]), proto.__file__\n"
            "print(sorted(proto.methods()))\n")
    done = subprocess.run([sys.executable, "-c", "import sys\n" + code, str(tmp_path / "site")], check=True,
                          capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path / "site")}, timeout=60)
    assert done.stdout.split("\n")[0] == str(["ModelInfer", "ModelMetadata", "ModelReady", "RepositoryIndex",
                                              "ServerLive", "ServerMetadata", "ServerReady"])
