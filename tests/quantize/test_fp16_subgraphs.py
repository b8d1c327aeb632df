"""FP16 of control flow, as the silero VAD models of the corpus have it: an If whose branches hold initializers of
the same name, and an op kept in float32 (Pow) on a value computed inside a branch. onnxruntime's float16 converter
asserted on the first and misplaced a Cast for the second; both candidates must load and compute the same."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from mlpk.packager.quantize import methods, subgraphs


def _branch(name: str, scale: float) -> onnx.GraphProto:
    nodes = [helper.make_node("Mul", ["x", "k"], [f"{name}_m"]),
             helper.make_node("Pow", [f"{name}_m", "two"], [f"{name}_p"]),  # kept in float32 (FP16_EXTRA_BLOCK)
             helper.make_node("Add", [f"{name}_p", "k"], [f"{name}_out"])]
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(f"{name}_out", TensorProto.FLOAT, None)],
                             initializer=[numpy_helper.from_array(np.full(4, scale, np.float32), "k")])  # same name


def _model(path: Path) -> Path:
    nodes = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
             helper.make_node("Greater", ["s", "zero"], ["positive"]),
             helper.make_node("If", ["positive"], ["y"], then_branch=_branch("then", 0.5, ),
                              else_branch=_branch("else", 2.0))]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
                              initializer=[numpy_helper.from_array(np.array(0.0, np.float32), "zero"),
                                           numpy_helper.from_array(np.array(2.0, np.float32), "two")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_repeated_subgraph_initializers_are_renamed_in_scope(tmp_path: Path) -> None:
    model = onnx.load(str(_model(tmp_path / "if.onnx")))
    assert subgraphs.unique_initializers(model) == 1
    branches = [a.g for a in model.graph.node[2].attribute]
    names = [b.initializer[0].name for b in branches]
    assert len(set(names)) == 2 and all(names[i] in branches[i].node[0].input for i in range(2))
    onnx.checker.check_model(model)


def test_fp16_of_an_if_with_a_float32_op_inside_loads_and_matches(tmp_path: Path) -> None:
    source = _model(tmp_path / "if.onnx")
    out = tmp_path / "if.fp16.onnx"
    methods.Fp16().apply(source, out, methods.Attempt("fp16", per_channel=False), None)
    want = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    got = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    for x in (np.array([1, 2, 3, 4], np.float32), np.array([-1, -2, 0.5, 0.25], np.float32)):
        np.testing.assert_allclose(got.run(None, {"x": x})[0], want.run(None, {"x": x})[0], rtol=1e-2)
