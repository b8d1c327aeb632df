"""Small ONNX models built with onnx.helper for the tests (generated, not committed blobs)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def linear(path: Path, *, opset: int = 17, ir: int = 8, batch: str | None = "N",
           initializers_as_inputs: bool = False, external: bool = False) -> Path:
    """y = x @ W + b with W (4x3), b (3); optionally in the style of old exporters (weights also listed as graph
    inputs) or with its tensors in an external data file."""
    rng = np.random.default_rng(0)
    weights = numpy_helper.from_array(rng.standard_normal((4, 3)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.standard_normal(3).astype(np.float32), "b")
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])]
    if initializers_as_inputs:
        inputs += [helper.make_tensor_value_info("W", TensorProto.FLOAT, [4, 3]),
                   helper.make_tensor_value_info("b", TensorProto.FLOAT, [3])]
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "W"], ["xw"]), helper.make_node("Add", ["xw", "b"], ["y"])],
        "linear", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 3])],
        initializer=[weights, bias])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
    onnx.checker.check_model(model)
    if external:
        onnx.save_model(model, str(path), save_as_external_data=True, location=path.name + ".weights",
                        size_threshold=0)
    else:
        onnx.save_model(model, str(path))
    return path
