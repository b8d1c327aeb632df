"""INT8 dynamic on the sample transformer encoder: integer MatMuls, cosine with FP32, a quarter of the size.

The speed figure (>= 1.5x at batch 1) is measured by bench/quantize.py, not asserted here: timings on a shared
machine are not a test (repository convention)."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from mlpk.packager.quantize import Mode, QuantizeOptions, quantize

pytestmark = pytest.mark.torch


def test_dynamic_int8_transformer(transformer: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = transformer
    out = tmp_path / "transformer.int8.onnx"
    result = quantize(model, QuantizeOptions(Mode.INT8_DYNAMIC, evaluation=data, latency_runs=5), out)
    figures = result.chosen.agreement
    assert figures is not None and figures.cosine >= 0.99, figures
    assert result.size_ratio <= 0.35, result.size_ratio
    ops = {node.op_type for node in onnx.load(str(out)).graph.node}
    assert ops & {"DynamicQuantizeMatMul", "MatMulInteger"}, sorted(ops)
    assert result.to_dict()["method"]["weights"] == "int8"
    assert result.latency.baseline_ms > 0 and result.latency.candidate_ms > 0


def test_dynamic_int8_for_tensorrt_is_a_config_error(transformer: tuple[Path, Path]) -> None:
    from mlpk.packager.errors import ConfigError
    from mlpk.packager.quantize import Backend

    with pytest.raises(ConfigError, match="int8-dynamic cannot run on TensorRT"):
        quantize(transformer[0], QuantizeOptions(Mode.INT8_DYNAMIC, Backend.TENSORRT))
