"""The model half of an export on an embedding model: `auto` never ships a quantized model on thin evidence, and
never one whose gated figure on the user's real inputs is below the gate (issue 13's broken speaker embedding)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mlpk.packager import modelprep, targets
from mlpk.packager.export import ExportRequest
from mlpk.packager.quantize import gate
from mlpk.packager.quantize.data import Dataset


def _embedding(path: Path, fragile: bool) -> Path:
    """x [batch, 64] -> an L2-normalised embedding [batch, 32]. `fragile`: the embedding is the small difference
    of two large, nearly equal projections, so INT8 weights (a step of max|w| / 127) turn it far off its direction,
    while each projection alone looks fine."""
    rng = np.random.default_rng(0)
    base = rng.standard_normal((64, 32)).astype(np.float32) * 4
    delta = rng.standard_normal((64, 32)).astype(np.float32) * (0.02 if fragile else 4)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["a"]), helper.make_node("MatMul", ["x", "w2"], ["b"]),
             helper.make_node("Sub", ["a", "b"], ["d"]),
             helper.make_node("LpNormalization", ["d"], ["embedding"], axis=1, p=2)]
    graph = helper.make_graph(nodes, "embed", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", 32])],
                              initializer=[numpy_helper.from_array(base + delta, "w1"),
                                           numpy_helper.from_array(base, "w2")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def _prepare(tmp_path: Path, model: Path, samples: int | None) -> modelprep.PreparedModel:
    data = None
    if samples is not None:
        data = tmp_path / f"real-{samples}.npz"
        np.savez(data, x=np.random.default_rng(1).standard_normal((samples, 64)).astype(np.float32))
    request = ExportRequest(model=model, target="cpu", out=tmp_path / "out", sample_data=data)
    return modelprep.prepare(request, targets.load("cpu"), tmp_path / f"work-{samples}", lambda _: None)


def _quantized(prepared: modelprep.PreparedModel) -> bool:
    shipped = onnx.load(str(prepared.files["model.onnx"]))
    return any(n.op_type in ("DynamicQuantizeLinear", "MatMulInteger") for n in shipped.graph.node)


def test_auto_keeps_fp32_when_the_evidence_is_thin(tmp_path: Path) -> None:
    model = _embedding(tmp_path / "embed.onnx", fragile=False)
    for samples in (None, 1, 17):
        prepared = _prepare(tmp_path, model, samples)
        reason = prepared.optimization.kept_fp32_because or ""
        assert prepared.optimization.mode == "none" and not _quantized(prepared)
        assert "auto quantizes only on" in reason and ("none were given" in reason if samples is None
                                                       else f"holds {samples}" in reason)
    assert prepared.files["warmup.npz"].is_file(), "the user's first sample warms the server up"


def test_auto_never_ships_an_embedding_that_fails_the_gate_on_real_inputs(tmp_path: Path) -> None:
    """With enough real samples auto tries INT8: the fragile embedding fails the worst-row cosine gate and FP32
    ships; a robust one passes and ships quantized — and its figures on the real inputs are within the gate."""
    fragile = _prepare(tmp_path / "f", _embedding((tmp_path / "f").mkdir() or tmp_path / "f" / "e.onnx", True), 64)
    reason = fragile.optimization.kept_fp32_because or ""
    assert not _quantized(fragile) and "failed the accuracy gate" in reason
    # the hint is in export's words: it has --quantize and profiles, not quantize's --mode and --max-drop
    assert "--quantize fp16" in reason and "max_drop under [optimize]" in reason and "--mode" not in reason
    robust = _prepare(tmp_path / "r", _embedding((tmp_path / "r").mkdir() or tmp_path / "r" / "e.onnx", False), 64)
    assert _quantized(robust) and robust.optimization.mode == "int8-dynamic"
    real = Dataset(({"x": np.random.default_rng(2).standard_normal((40, 64)).astype(np.float32)},), None, "real")
    reference = gate.run(gate.open_session(tmp_path / "r" / "e.onnx"), real, 64)
    shipped = gate.run(gate.open_session(robust.files["model.onnx"]), real, 64)
    figures = gate.compare(reference, shipped, None)
    assert figures.outputs[0].kind == "values" and figures.passes(targets.load("cpu").optimize.max_drop)


def test_with_calibration_data_the_gate_judges_on_the_sample_data(tmp_path: Path) -> None:
    """--calibration C --sample-data S: the gate judges on S, the data the user says the model will see, not on a
    held-out quarter of C (which passed a digits model that lost 16 points on S); the figures name the data."""
    model = _embedding(tmp_path / "embed.onnx", fragile=True)
    rng = np.random.default_rng(3)
    np.savez(tmp_path / "calibration.npz", x=rng.standard_normal((64, 64)).astype(np.float32))
    np.savez(tmp_path / "real.npz", x=rng.standard_normal((40, 64)).astype(np.float32))
    request = ExportRequest(model=tmp_path / "embed.onnx", target="cpu", out=tmp_path / "out", quantize="int8-static",
                            calibration=tmp_path / "calibration.npz", sample_data=tmp_path / "real.npz")
    assert modelprep._evaluation(request) == tmp_path / "real.npz"
    same = ExportRequest(model=model, target="cpu", out=tmp_path / "out", calibration=tmp_path / "real.npz",
                         sample_data=tmp_path / "real.npz")
    assert modelprep._evaluation(same) is None  # one file: a held-out part of it, as with either alone
    robust = ExportRequest(model=_embedding(tmp_path / "robust.onnx", fragile=False), target="cpu",
                           out=tmp_path / "out", quantize="int8-static", calibration=tmp_path / "calibration.npz",
                           sample_data=tmp_path / "real.npz")
    prepared = modelprep.prepare(robust, targets.load("cpu"), tmp_path / "work", lambda _: None)
    figures = prepared.optimization.figures or {}
    assert figures["evaluation_data"] == "real.npz" and figures["accuracy"]["samples"] == 40
    assert figures["calibration_data"].startswith("calibration.npz")


def test_auto_keeps_fp32_when_int8_is_neither_smaller_nor_faster() -> None:
    """A small model's INT8 graph can pass the gate and still be larger (its scales) and slower: auto says so and
    ships FP32; smaller or faster is a gain."""
    worse = {"mode": "int8-dynamic", "size": {"ratio": 1.048}, "latency": {"speedup": 0.794}}
    assert "no gain here: 1.05x the size and 0.79x the speed" in (modelprep.no_gain(worse) or "")
    assert modelprep.no_gain({**worse, "size": {"ratio": 0.3}}) is None
    assert modelprep.no_gain({**worse, "latency": {"speedup": 1.4}}) is None
