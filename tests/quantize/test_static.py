"""INT8 static QDQ end to end on the sample digits CNN, for CPU and for TensorRT, and the gate on a fragile model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from mlpk.packager.quantize import Backend, GateFailure, Mode, QuantizeOptions, quantize
from mlpk.packager.quantize.report import METADATA_KEY, report_path

pytestmark = pytest.mark.torch


def _ops(path: Path) -> list[str]:
    return [node.op_type for node in onnx.load(str(path)).graph.node]


def test_static_int8_digits_cnn_meets_the_acceptance(digits_cnn: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = digits_cnn
    out = tmp_path / "cnn.int8.onnx"
    result = quantize(model, QuantizeOptions(Mode.INT8_STATIC, calibration=data), out)
    figures = result.to_dict()
    assert figures["accuracy"]["argmax_agreement"] >= 0.99, figures["accuracy"]
    assert figures["size"]["ratio"] <= 0.35, figures["size"]
    assert 0 < out.stat().st_size - result.size_after < 8192  # the written model also carries the report
    ops = _ops(out)
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 5  # QDQ format
    stored = json.loads({p.key: p.value for p in onnx.load(str(out)).metadata_props}[METADATA_KEY])
    assert stored == json.loads(report_path(out).read_text()) == figures
    assert figures["evaluation_data"].endswith("(held out)") and figures["latency"]["runs"] == 50


def test_tensorrt_output_is_symmetric_and_per_channel(digits_cnn: tuple[Path, Path], tmp_path: Path) -> None:
    model, data = digits_cnn
    out = tmp_path / "cnn.trt.onnx"
    result = quantize(model, QuantizeOptions(Mode.INT8_STATIC, Backend.TENSORRT, calibration=data,
                                             latency_runs=3), out)
    assert result.chosen.agreement is not None and result.chosen.agreement.argmax_agreement >= 0.99
    graph = onnx.load(str(out)).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    qdq = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    zero_points = [constants[n.input[2]] for n in qdq if len(n.input) > 2 and n.input[2] in constants]
    assert zero_points and not any(zp.any() for zp in zero_points)  # symmetric: every zero point is 0
    assert {zp.dtype for zp in zero_points} <= {np.dtype(np.int8), np.dtype(np.int32)}  # S8 (int32: biases)
    conv_weights = {n.input[1] for n in graph.node if n.op_type == "Conv"}
    weight_dq = [n for n in qdq if n.op_type == "DequantizeLinear" and n.output[0] in conv_weights]
    assert weight_dq and all(constants[n.input[1]].size > 1 for n in weight_dq)  # one scale per output channel


def test_fragile_model_trips_the_gate_and_a_named_fallback_passes(fragile: tuple[Path, Path],
                                                                  tmp_path: Path) -> None:
    model, data = fragile
    out = tmp_path / "fragile.int8.onnx"
    result = quantize(model, QuantizeOptions(Mode.INT8_STATIC, calibration=data, latency_runs=3), out)
    first = result.trials[0]
    assert not first.passed and first.agreement is not None and first.agreement.drop > 0.5
    figures = result.to_dict()
    assert figures["fallback"] is True and "in float:" in figures["chosen"]
    assert result.chosen.attempt.excluded, "the passing fallback names the nodes it kept in float"
    assert figures["accuracy"]["drop"] <= 0.01
    assert [a["passed"] for a in figures["attempts"]][-1] is True and len(figures["attempts"]) >= 2


def test_without_fallbacks_the_fragile_model_is_refused_with_figures(fragile: tuple[Path, Path],
                                                                     tmp_path: Path) -> None:
    model, data = fragile
    out = tmp_path / "refused.onnx"
    with pytest.raises(GateFailure) as caught:
        quantize(model, QuantizeOptions(Mode.INT8_STATIC, calibration=data, fallbacks=False), out)
    message = caught.value.message
    assert "failed the accuracy gate (max drop 0.01)" in message and "accuracy drop 0." in message
    assert "argmax agreement" in message and len(caught.value.trials) == 1
    assert not out.exists() and not report_path(out).exists() and list(tmp_path.iterdir()) == []


def test_dynamic_int8_quantizes_the_linear_layers_of_a_cnn(digits_cnn: tuple[Path, Path], tmp_path: Path) -> None:
    """Dynamic INT8 covers linear layers: the exporter's Gemm nodes become integer MatMuls; Conv stays float."""
    model, data = digits_cnn
    out = tmp_path / "cnn.dyn.onnx"
    result = quantize(model, QuantizeOptions(Mode.INT8_DYNAMIC, evaluation=data, latency_runs=3), out)
    ops = _ops(out)
    assert ops.count("MatMulInteger") + ops.count("DynamicQuantizeMatMul") == 2 and "Gemm" not in ops
    assert "Conv" in ops and result.chosen.agreement is not None and result.chosen.agreement.argmax_agreement >= 0.99


def test_calibration_from_a_directory_and_per_tensor_start(digits_cnn: tuple[Path, Path], tmp_path: Path) -> None:
    """A directory of NAME.npy arrays is calibration data too; --per-tensor starts per-tensor, and the report
    records the settings each attempt used (per-channel is the first fallback when per-tensor fails)."""
    model, data = digits_cnn
    arrays = tmp_path / "arrays"
    arrays.mkdir()
    with np.load(data) as held_out:
        np.save(arrays / "image.npy", held_out["image"])
        np.save(arrays / "labels.npy", held_out["labels"])
    result = quantize(model, QuantizeOptions(Mode.INT8_STATIC, calibration=arrays, per_channel=False,
                                             latency_runs=3), tmp_path / "out.onnx")
    attempts = result.to_dict()["attempts"]
    assert attempts[0]["settings"]["per_channel"] is False and attempts[0]["label"] == "int8-static minmax"
    assert all(a["passed"] is (i == len(attempts) - 1) for i, a in enumerate(attempts))
    if len(attempts) > 1:
        assert attempts[1]["settings"]["per_channel"] is True
    assert result.to_dict()["calibration_data"].startswith("arrays [:")
