"""Trained sample models for the conversion tests: each sample script runs once per session into a temp dir
(the same scripts the README's quickstart uses), so the TF / torch training cost is paid once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, require


def _train(tmp_path_factory: pytest.TempPathFactory, script: str) -> Path:
    out = tmp_path_factory.mktemp(script.removesuffix(".py"))
    done = subprocess.run([sys.executable, str(REPO / "samples" / script), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, f"{script} failed:\n{done.stdout}\n{done.stderr[-3000:]}"
    assert "held-out accuracy" in done.stdout
    return out


@pytest.fixture(scope="session")
def keras_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("keras")
    return _train(tmp_path_factory, "train_keras_cnn.py")


@pytest.fixture(scope="session")
def torch_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("torch")
    return _train(tmp_path_factory, "train_torch_cnn.py")


@pytest.fixture(scope="session")
def sklearn_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require("sklearn")
    out = _train(tmp_path_factory, "train_sklearn_tabular.py")
    done = subprocess.run([sys.executable, str(REPO / "samples" / "train_sklearn_text.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300, check=True)
    assert "held-out accuracy" in done.stdout
    return out
