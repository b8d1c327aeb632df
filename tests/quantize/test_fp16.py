"""FP16: half the size, FP32 inputs and outputs, outputs close to FP32."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from mlpk.packager.quantize import Mode, QuantizeOptions, gate, quantize
from mlpk.packager.quantize.data import Dataset

pytestmark = pytest.mark.torch


def test_fp16_digits_cnn(digits_cnn: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = digits_cnn
    out = tmp_path / "cnn.fp16.onnx"
    result = quantize(model, QuantizeOptions(Mode.FP16, evaluation=data, latency_runs=3), out)
    assert 0.4 <= result.size_ratio <= 0.55, result.size_ratio
    graph = onnx.load(str(out)).graph
    assert all(v.type.tensor_type.elem_type == TensorProto.FLOAT for v in (*graph.input, *graph.output))
    assert any(t.data_type == TensorProto.FLOAT16 for t in graph.initializer)
    figures = result.chosen.agreement
    assert figures is not None and figures.argmax_agreement == 1.0
    # outputs within 1e-2 of FP32, relative to the logits' magnitude (FP16 keeps ~3 significant digits)
    with np.load(data) as arrays:
        held_out = Dataset(({"image": arrays["image"]},), None, data.name)
    reference = gate.run(gate.open_session(model), held_out, 64)["logits"]
    assert figures.max_abs_error <= 1e-2 * max(1.0, float(np.abs(reference).max()))
    assert figures.max_abs_error < 0.05

