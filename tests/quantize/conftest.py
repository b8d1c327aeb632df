"""Models for the quantization tests, built once per session from scikit-learn's digits (tests/quantize/models.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import require
from tests.quantize import models


@pytest.fixture(scope="session")
def digits_cnn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(ONNX path, held-out .npz) of the sample digits CNN."""
    require("torch")
    return models.digits_cnn(tmp_path_factory.mktemp("cnn"))


@pytest.fixture(scope="session")
def fragile(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(ONNX path, held-out .npz) of the MLP with activation outliers."""
    require("torch")
    return models.fragile_mlp(tmp_path_factory.mktemp("fragile"))


@pytest.fixture(scope="session")
def transformer(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(ONNX path, held-out .npz) of the sample transformer encoder, trained for one epoch."""
    require("torch")
    return models.transformer(tmp_path_factory.mktemp("transformer"))
