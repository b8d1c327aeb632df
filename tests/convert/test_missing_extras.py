"""Acceptance: without a heavy extra installed, the other formats still work and the missing one says which extra
to install. The framework import is blocked in a subprocess (`sys.modules[name] = None` makes `import name` raise
ImportError), which is what a machine without the package sees; uninstalling packages per test is not possible here.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mlpk.packager.errors import ToolchainError
from tests.convert.onnx_models import linear

_RUN = """
import sys
for name in {blocked!r}:
    sys.modules[name] = None
from mlpk.packager.cli import main
main({argv!r})
"""


def _run_blocked(blocked: list[str], argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", _RUN.format(blocked=blocked, argv=argv)], capture_output=True,
                          text=True, cwd=cwd, timeout=300, check=False)


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


@pytest.mark.parametrize(("blocked", "name", "content", "extra"), [
    (["tensorflow", "tf2onnx", "tf_keras"], "model.h5", HDF5_SIGNATURE + b"\0" * 64, "keras"),
    (["torch"], "model.pt2", None, "torch"),
    (["sklearn", "skl2onnx"], "model.joblib", b"\x80\x04\x95" + b"\0" * 32, "sklearn"),
], ids=["keras", "torch", "sklearn"])
def test_missing_extra_names_it_and_onnx_still_converts(tmp_path: Path, blocked: list[str], name: str,
                                                         content: bytes | None, extra: str) -> None:
    if content is None:  # a zip laid out like a torch.export archive: detection needs no torch
        import zipfile

        with zipfile.ZipFile(tmp_path / name, "w") as archive:
            archive.writestr("model/archive_format", "pt2")
    else:
        (tmp_path / name).write_bytes(content)
    done = _run_blocked(blocked, ["convert", name, "--trust-pickle", "-o", "out/m.onnx"], tmp_path)
    assert done.returncode == ToolchainError.exit_code, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "Traceback" not in line
    assert f"pip install 'mlpack-packager[{extra}]'" in line, line
    assert not (tmp_path / "out").exists()

    linear(tmp_path / "plain.onnx")
    done = _run_blocked(blocked, ["convert", "plain.onnx", "-o", "out/plain.onnx"], tmp_path)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "out" / "plain.onnx").is_file()
