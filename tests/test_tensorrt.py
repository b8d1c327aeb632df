"""The TensorRT prebuild boundary, tested on a machine without TensorRT (none can be installed here: its PyPI
packages download from NVIDIA's own index at install time, which is not reachable)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from mlpk.packager import targets, tensorrt
from mlpk.packager.errors import ToolchainError
from mlpk.runtimes import config
from tests.export import models


def test_engine_paths_are_the_runtimes_own(tmp_path: Path) -> None:
    """A prebuilt engine lands where the image's runtime looks: CACHE/<sha256[:16]>/engines under the target's
    engine cache, which the image's environment names as MLPACK_TRT_CACHE."""
    model = models.mlp(tmp_path)
    cuda = targets.load("cuda")
    settings = tensorrt.settings_for(model, cuda, {}, Path(cuda.tensorrt.engine_cache))  # type: ignore[union-attr]
    sha = hashlib.sha256(model.read_bytes()).hexdigest()
    assert settings.engine_dir == Path(cuda.tensorrt.engine_cache) / sha[:16] / "engines"  # type: ignore[union-attr]
    assert settings.precision == "fp16", "the cuda profile asks for FP16 engines"
    runtime = config.from_env({"MLPACK_TRT_CACHE": cuda.tensorrt.engine_cache})  # type: ignore[union-attr]
    assert runtime.trt_cache == settings.cache_root
    int8 = tensorrt.settings_for(model, cuda, {"quantization": {"mode": "int8-static"}}, Path("/c"))
    assert int8.precision == "int8"


def test_prebuild_without_tensorrt_is_a_toolchain_error(tmp_path: Path) -> None:
    with pytest.raises(ToolchainError) as err:
        tensorrt.check_available(targets.load("cuda"), "linux/amd64")
    assert "TensorrtExecutionProvider" in str(err.value) and "first start" in (err.value.hint or "")
    with pytest.raises(ToolchainError, match="does not use TensorRT"):
        tensorrt.check_available(targets.load("lambda"), "linux/amd64")
    with pytest.raises(ToolchainError, match="linux/arm64"):
        tensorrt.check_available(targets.load("jetson"), "linux/arm64")


def test_export_refuses_prebuild_before_doing_any_work(mlpack, tmp_path: Path) -> None:
    model = models.mlp(tmp_path / "m")
    out = tmp_path / "out"
    done = mlpack("export", str(model), "--target", "cuda", "--prebuild-engine", "-o", str(out))
    assert done.returncode == ToolchainError.exit_code, done.stderr
    assert done.stderr.count("\n") == 1 and "TensorrtExecutionProvider" in done.stderr
    assert not out.exists()
