"""Dynamic INT8 of models whose dense layers are Gemm nodes (torch's nn.Linear, skl2onnx MLPs): onnxruntime has no
integer Gemm kernel, so mlpack rewrites them as MatMul + Add first; without that nothing would be quantized."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from mlpk.packager.quantize import Mode, QuantizeOptions, quantize
from mlpk.packager.quantize.methods import gemm_as_matmul

RNG = np.random.default_rng(3)


def _gemm_mlp(path: Path, width: int = 256) -> Path:
    """x[n, 64] -> Gemm(transB, alpha 0.5, beta 2) -> Relu -> Gemm(no bias) -> y[n, 10]."""
    w1 = RNG.normal(0, 0.2, (width, 64)).astype(np.float32)  # stored transposed: transB=1
    b1 = RNG.normal(0, 0.1, width).astype(np.float32)
    w2 = RNG.normal(0, 0.2, (width, 10)).astype(np.float32)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"], name="dense1", transB=1, alpha=0.5, beta=2.0),
             helper.make_node("Relu", ["h"], ["hr"], name="relu"),
             helper.make_node("Gemm", ["hr", "w2"], ["y"], name="dense2")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 10])],
                              [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"))])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_rewrite_keeps_the_function_and_the_names(tmp_path: Path) -> None:
    source = _gemm_mlp(tmp_path / "mlp.onnx")
    model = onnx.load(str(source))
    assert gemm_as_matmul(model) == 2
    onnx.checker.check_model(model)
    assert [(n.name, n.op_type) for n in model.graph.node] == [
        ("dense1", "MatMul"), ("dense1/bias", "Add"), ("relu", "Relu"), ("dense2", "MatMul")]
    assert {t.name for t in model.graph.initializer} == {"dense1/weight_for_matmul", "dense1/bias_for_matmul",
                                                         "dense2/weight_for_matmul"}
    x = RNG.standard_normal((5, 64)).astype(np.float32)
    before = ort.InferenceSession(str(source)).run(None, {"x": x})[0]
    after = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})[0]
    np.testing.assert_allclose(after, before, rtol=1e-5, atol=1e-5)


def test_a_gemm_mlp_is_quantized_dynamically(tmp_path: Path) -> None:
    source = _gemm_mlp(tmp_path / "mlp.onnx")
    np.savez(tmp_path / "mlp.npz", x=RNG.standard_normal((64, 64)).astype(np.float32))
    result = quantize(source, QuantizeOptions(Mode.INT8_DYNAMIC, calibration=tmp_path / "mlp.npz", latency_runs=3),
                      tmp_path / "mlp.int8.onnx")
    ops = [n.op_type for n in onnx.load(str(tmp_path / "mlp.int8.onnx")).graph.node]
    assert "MatMulInteger" in ops or "DynamicQuantizeMatMul" in ops, ops
    figures = result.to_dict()
    assert figures["accuracy"]["cosine"] > 0.99 and figures["size"]["ratio"] < 0.5, figures
