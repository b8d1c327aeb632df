"""A torch TransformerEncoder exported with dynamic (batch, time) axes whose traced graph runs only at its traced
sequence length (the TorchScript exporter bakes it into the attention Reshapes): dynamic INT8 needs no user data,
as plain onnxruntime quantize_dynamic does — the signature probes the length from the graph's constants."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlpk.packager.quantize import QuantizeOptions, quantize
from mlpk.packager.quantize.data import model_signature
from mlpk.packager.quantize.options import Mode


@pytest.mark.torch
def test_a_traced_sequence_length_is_found_and_int8_dynamic_runs_without_data(tmp_path: Path) -> None:
    import torch
    torch.manual_seed(0)
    layer = torch.nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, batch_first=True)
    encoder = torch.nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False).eval()
    model = tmp_path / "encoder.onnx"
    torch.onnx.export(encoder, (torch.randn(2, 10, 32),), str(model), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch", 1: "time"}, "y": {0: "batch", 1: "time"}}, dynamo=False,
                      opset_version=17)
    sig = model_signature(model)
    assert sig.inputs[0].example_shape == (1, 10, 32), "the traced length 10, not a guess that does not run"
    result = quantize(model, QuantizeOptions(Mode.INT8_DYNAMIC), tmp_path / "encoder.int8.onnx")
    assert result.chosen.passed and "synthetic" in result.evaluation_source
    figures = result.chosen.agreement
    assert figures is not None and figures.outputs[0].kind == "values"
    assert figures.outputs[0].min_cosine is not None and figures.outputs[0].min_cosine > 0.99
    assert np.isfinite(result.latency.candidate_ms)
