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


def voice(path: Path) -> Path:
    """A voice-activity model shaped like silero-vad's ONNX export: `input` [B, N] float, `state` [2, B, 128]
    float, `sr` [] int64; it runs only when sr is 16000 or 8000 (an If on Equal(sr, 16000) whose else branch
    reshapes to [-1, Equal(sr, 8000)], impossible unless sr == 8000), and returns a probability [B, 1] and the
    next state."""
    def else_branch() -> onnx.GraphProto:
        nodes = [helper.make_node("Equal", ["sr", "sr8"], ["is8"]),
                 helper.make_node("Cast", ["is8"], ["is8i"], to=TensorProto.INT64),
                 helper.make_node("Unsqueeze", ["is8i", "zero"], ["cols"]),
                 helper.make_node("Concat", ["minus1", "cols"], ["shape8"], axis=0),
                 helper.make_node("Reshape", ["mean", "shape8"], ["out_else"], allowzero=1)]
        return helper.make_graph(nodes, "else", [], [helper.make_tensor_value_info("out_else", TensorProto.FLOAT,
                                                                                   None)])

    then_branch = helper.make_graph([helper.make_node("Identity", ["mean"], ["out_then"])], "then", [],
                                    [helper.make_tensor_value_info("out_then", TensorProto.FLOAT, None)])
    nodes = [
        helper.make_node("Slice", ["state", "zero", "one_i", "zero"], ["state0"]),
        helper.make_node("Squeeze", ["state0", "zero"], ["h"]),  # [B, 128]: the first layer's state
        helper.make_node("ReduceMean", ["input"], ["level"], axes=[1], keepdims=1),  # [B, 1]
        helper.make_node("MatMul", ["h", "w"], ["hw"]),
        helper.make_node("Add", ["level", "hw"], ["mean"]),
        helper.make_node("Equal", ["sr", "sr16"], ["is16"]),
        helper.make_node("If", ["is16"], ["logit"], then_branch=then_branch, else_branch=else_branch()),
        helper.make_node("Sigmoid", ["logit"], ["output"]),
        helper.make_node("Add", ["state", "one"], ["stateN"]),
    ]
    inits = [numpy_helper.from_array(np.full((128, 1), 0.01, np.float32), "w"),
             numpy_helper.from_array(np.array(16000, np.int64), "sr16"),
             numpy_helper.from_array(np.array(8000, np.int64), "sr8"),
             numpy_helper.from_array(np.array([1.0], np.float32), "one"),
             numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one_i"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1")]
    graph = helper.make_graph(
        nodes, "vad",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, None]),
         helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, None, 128]),
         helper.make_tensor_value_info("sr", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 1]),
         helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, None, 128])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path


def strided(path: Path, stride: int = 32) -> Path:
    """A detector-like model with H and W dynamic that runs only on multiples of `stride` (it cuts the image
    into stride x stride cells with a Reshape, as a YOLO head's grid does): image [N, 3, H, W] -> cells."""
    k = numpy_helper.from_array(np.array(stride, np.int64), "k")
    nodes = [
        helper.make_node("Shape", ["image"], ["shape"]),
        helper.make_node("Gather", ["shape", "i2"], ["h"], axis=0),
        helper.make_node("Gather", ["shape", "i3"], ["w"], axis=0),
        helper.make_node("Div", ["h", "k"], ["gh"]),
        helper.make_node("Div", ["w", "k"], ["gw"]),
        helper.make_node("Concat", ["n1", "c3", "gh", "kk", "gw", "kk"], ["grid"], axis=0),
        helper.make_node("Reshape", ["image", "grid"], ["cells"]),
        helper.make_node("ReduceMean", ["cells"], ["pooled"], axes=[3, 5], keepdims=0),
    ]
    inits = [k, numpy_helper.from_array(np.array([2], np.int64), "i2"),
             numpy_helper.from_array(np.array([3], np.int64), "i3"),
             numpy_helper.from_array(np.array([-1], np.int64), "n1"),
             numpy_helper.from_array(np.array([3], np.int64), "c3"),
             numpy_helper.from_array(np.array([stride], np.int64), "kk")]
    nodes[3:5] = [helper.make_node("Div", ["h1", "kk"], ["gh"]), helper.make_node("Div", ["w1", "kk"], ["gw"])]
    nodes[1:3] = [helper.make_node("Slice", ["shape", "i2", "i3"], ["h1"]),
                  helper.make_node("Slice", ["shape", "i3", "i4"], ["w1"])]
    inits.append(numpy_helper.from_array(np.array([4], np.int64), "i4"))
    graph = helper.make_graph(
        nodes, "strided", [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, "H", "W"])],
        [helper.make_tensor_value_info("pooled", TensorProto.FLOAT, ["N", 3, None, None])], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save_model(model, str(path))
    return path
