"""Pre-processing skips symbolic shape inference only where ONNX's own shape inference already gives every value a
full shape, and then yields the very graph (and dynamic-INT8 graph) that the symbolic pass would have."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from mlpk.packager.quantize import prepare
from tests.quantize import graphs


def _contrib(path: Path) -> Path:
    """x[n, 8] -> com.microsoft Gelu -> y: ONNX cannot infer a contrib op's output."""
    graph = helper.make_graph([helper.make_node("Gelu", ["x"], ["y"], domain="com.microsoft", name="gelu")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])])
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize(("build", "complete"), [
    (graphs.two_heads, True),  # MatMul and Tanh: every shape follows from x[n, 4, 16]
    (graphs.shape_arithmetic, False),  # a Reshape to a shape computed at run time (declared [n, 16]: not inferred)
    (graphs.subgraphs, False),  # a Loop's body
    (_contrib, False),  # declared [n, 8], which ONNX cannot infer
])
def test_onnx_shapes_complete(build, complete: bool, tmp_path: Path) -> None:
    assert prepare.onnx_shapes_complete(build(tmp_path / "model.onnx")) is complete


def _graph(path: Path) -> tuple[list[tuple[object, ...]], list[tuple[str, bytes]]]:
    model = onnx.load(str(path))
    nodes = [(n.op_type, n.domain, tuple(n.input), tuple(n.output), tuple(a.SerializeToString() for a in n.attribute))
             for n in model.graph.node]
    return nodes, sorted((t.name, t.SerializeToString()) for t in model.graph.initializer)


@pytest.mark.parametrize("model", ["two_heads", "resnet50"])
def test_without_the_symbolic_pass_the_prepared_and_quantized_graphs_are_the_same(model: str, tmp_path: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    source = graphs.two_heads(tmp_path / "model.onnx") if model == "two_heads" else graphs.light_model(model)
    assert prepare.onnx_shapes_complete(source)
    prepare._onnxruntime_tools_without_torch()
    from onnxruntime.quantization.shape_inference import quant_pre_process

    made = {}
    for skip in (False, True):
        pre, quantized = tmp_path / f"pre-{skip}.onnx", tmp_path / f"int8-{skip}.onnx"
        quant_pre_process(str(source), str(pre), skip_symbolic_shape=skip)
        quantize_dynamic(str(pre), str(quantized), weight_type=QuantType.QInt8)
        made[skip] = (_graph(pre), _graph(quantized))
    assert made[True] == made[False]

    step = prepare._preprocess(source, tmp_path / "prepared.onnx", large=False)
    assert step.kept and step.detail.startswith("ONNX shapes complete, so no symbolic shapes"), step.detail
