"""Tiny ONNX models for the runtime's tests, generated with onnx.helper (no committed blobs).

- `every_dtype`: one input per v2 datatype, each echoed by Identity, with a dynamic batch axis.
- `mixed`: several inputs and outputs of different datatypes doing real arithmetic (MatMul+Add in fp32, Mul in
  fp16, Add in int64, Not on bool, Identity on strings), dynamic batch axis.
- `heavy`: a chain of MatMuls whose run time grows with the batch size, for draining and concurrency tests.
- `sleeper`: `y = x @ Q^(16 n)` (Q orthogonal, so values neither blow up nor decay into slow denormals) as a Loop
  of `n` (a scalar input) rounds: a call chooses how long its run takes, for the scheduling tests.
- `vad`: a voice-activity-shaped model (`input [B,N]`, `state [2,B,128]`, scalar int64 `sr` that must be 8000 or
  16000: any other rate indexes past a 2-entry table), with or without the card's signature hints.
- `grid32`: a detector-shaped model whose H and W must be multiples of 32 (it reshapes them into 32-pixel cells),
  with or without the card's `example_shape`.
- `seq`: `y = 2 x` and `s = sum(x, axis 1)` over `x FP32 [batch, length]`: calls of different lengths cannot share
  a run, for the batching tests.
- `centered`: `y = x - mean(x, axis 0)`, whose rows depend on each other: it must never be batched.
- `row30`: one fixed-shape input `x FP32 [1, 30]` summed into `y FP32 [1, 1]`, for the memory-bound tests.
- `zipmap`: a scikit-learn LogisticRegression on iris through skl2onnx with ZipMap (`output_probability` is a
  `seq(map(int64, tensor(float)))`, or string keys with `string_labels`).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

DTYPES: dict[str, int] = {
    "BOOL": TensorProto.BOOL, "INT8": TensorProto.INT8, "INT16": TensorProto.INT16, "INT32": TensorProto.INT32,
    "INT64": TensorProto.INT64, "UINT8": TensorProto.UINT8, "UINT16": TensorProto.UINT16,
    "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64, "FP16": TensorProto.FLOAT16,
    "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE, "BYTES": TensorProto.STRING,
}
OPSET = [helper.make_opsetid("", 17)]
IR_VERSION = 9  # onnxruntime 1.31 reads IR <= 13; onnx 1.23 writes 14 by default


def _save(model: onnx.ModelProto, directory: Path, name: str, card: bool = True, **card_keys: object) -> Path:
    onnx.checker.check_model(model)
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, directory / "model.onnx")
    if card:
        (directory / "model-card.json").write_text(json.dumps({
            "schema": "mlpack.model-card/v1", "name": name, "mlpack_version": "0", "source": None,
            "inputs": [], "outputs": [], "parity": None, "quantization": None, "unknown_key_is_ignored": 1,
            **card_keys}))
    return directory


def every_dtype(directory: Path, kinds: tuple[str, ...] = tuple(DTYPES)) -> Path:
    """out_KIND = in_KIND, [batch, 2], for each v2 datatype in `kinds` (default: all of them)."""
    chosen = {name: DTYPES[name] for name in kinds}
    inputs = [helper.make_tensor_value_info(f"in_{name.lower()}", code, ["batch", 2]) for name, code in chosen.items()]
    outputs = [helper.make_tensor_value_info(f"out_{name.lower()}", code, ["batch", 2])
               for name, code in chosen.items()]
    nodes = [helper.make_node("Identity", [f"in_{n.lower()}"], [f"out_{n.lower()}"]) for n in chosen]
    graph = helper.make_graph(nodes, "every_dtype", inputs, outputs)
    return _save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), directory, "every-dtype")


MIXED_W = np.arange(8, dtype=np.float32).reshape(4, 2) / 10
MIXED_B = np.array([0.5, -0.5], dtype=np.float32)


def mixed(directory: Path, *, card: bool = True) -> Path:
    inputs = [
        helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4]),
        helper.make_tensor_value_info("h", TensorProto.FLOAT16, ["batch", 3]),
        helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch"]),
        helper.make_tensor_value_info("mask", TensorProto.BOOL, ["batch"]),
        helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"]),
    ]
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 2]),
        helper.make_tensor_value_info("h2", TensorProto.FLOAT16, ["batch", 3]),
        helper.make_tensor_value_info("ids_next", TensorProto.INT64, ["batch"]),
        helper.make_tensor_value_info("unmasked", TensorProto.BOOL, ["batch"]),
        helper.make_tensor_value_info("text_out", TensorProto.STRING, ["batch"]),
    ]
    init = [numpy_helper.from_array(MIXED_W, "W"), numpy_helper.from_array(MIXED_B, "B"),
            numpy_helper.from_array(np.array(2, dtype=np.float16), "two"),
            numpy_helper.from_array(np.array(1, dtype=np.int64), "one")]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("Add", ["xw", "B"], ["y"]),
        helper.make_node("Mul", ["h", "two"], ["h2"]),
        helper.make_node("Add", ["ids", "one"], ["ids_next"]),
        helper.make_node("Not", ["mask"], ["unmasked"]),
        helper.make_node("Identity", ["text"], ["text_out"]),
    ]
    graph = helper.make_graph(nodes, "mixed", inputs, outputs, init)
    return _save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), directory, "mixed", card)


def heavy(directory: Path, depth: int = 64, width: int = 512) -> Path:
    rng = np.random.default_rng(0)
    weight = (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32)
    nodes = []
    previous = "x"
    for index in range(depth):
        nodes.append(helper.make_node("MatMul", [previous, "W"], [f"m{index}"]))
        previous = f"m{index}"
    nodes.append(helper.make_node("Identity", [previous], ["y"]))
    graph = helper.make_graph(nodes, "heavy", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
                              [numpy_helper.from_array(weight, "W")])
    return _save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), directory, "heavy")


def sleeper(directory: Path, width: int = 256, chain: int = 16) -> Path:
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.standard_normal((width, width)))
    nodes, previous = [], "v_in"
    for index in range(chain):
        nodes.append(helper.make_node("MatMul", [previous, "Q"], [f"m{index}"]))
        previous = f"m{index}"
    nodes += [helper.make_node("Identity", [previous], ["v_out"]), helper.make_node("Identity", ["cond_in"], ["cond_out"])]
    body = helper.make_graph(nodes, "round", [
        helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        helper.make_tensor_value_info("v_in", TensorProto.FLOAT, ["batch", width])], [
        helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
        helper.make_tensor_value_info("v_out", TensorProto.FLOAT, ["batch", width])])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["n", "true", "x"], ["y"], body=body)], "sleeper",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", width]),
         helper.make_tensor_value_info("n", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", width])],
        [numpy_helper.from_array(q.astype(np.float32), "Q"), numpy_helper.from_array(np.array(True), "true")])
    return _save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), directory, "sleeper",
                 signature={"inputs": [{"name": "n", "values": [0]}]})


def seq(directory: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["y"]), helper.make_node("ReduceSum", ["x", "axis1"], ["s"], keepdims=0)],
        "seq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "length"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "length"]),
         helper.make_tensor_value_info("s", TensorProto.FLOAT, ["batch"])],
        [numpy_helper.from_array(np.array(2, np.float32), "two"), numpy_helper.from_array(np.array([1]), "axis1")])
    return _save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), directory, "seq")


def centered(directory: Path) -> Path:
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["x"], ["mean"], axes=[0], keepdims=1), helper.make_node("Sub", ["x", "mean"], ["y"])],
        "centered", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])])
    return _save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), directory, "centered")


def row30(directory: Path) -> Path:
    graph = helper.make_graph([helper.make_node("ReduceSum", ["x"], ["y"], keepdims=1)], "row30",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 30])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1])])
    return _save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), directory, "row30")


VAD_GAIN = {16000: 2.0, 8000: 1.0}


def vad(directory: Path, *, hints: bool = True) -> Path:
    """out[b] = mean(input[b]) * gain(sr) + mean(state[:, b]); state_out = state + mean(input[b]) * gain(sr).
    gain(sr) = table[2 - sr // 8000]: 16000 -> 2.0, 8000 -> 1.0, and sr = 0 (a zero warm-up) is index 2 of 2."""
    inputs = [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", "samples"]),
              helper.make_tensor_value_info("state", TensorProto.FLOAT, [2, "batch", 128]),
              helper.make_tensor_value_info("sr", TensorProto.INT64, [])]
    outputs = [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch"]),
               helper.make_tensor_value_info("stateN", TensorProto.FLOAT, [2, "batch", 128])]
    init = [numpy_helper.from_array(np.array([VAD_GAIN[16000], VAD_GAIN[8000]], np.float32), "gains"),
            numpy_helper.from_array(np.array(8000, np.int64), "c8000"),
            numpy_helper.from_array(np.array(2, np.int64), "c2")]
    nodes = [
        helper.make_node("Div", ["sr", "c8000"], ["k"]),
        helper.make_node("Sub", ["c2", "k"], ["index"]),
        helper.make_node("Gather", ["gains", "index"], ["gain"]),
        helper.make_node("ReduceMean", ["input"], ["level"], axes=[1], keepdims=1),
        helper.make_node("Mul", ["level", "gain"], ["scaled"]),
        helper.make_node("Add", ["state", "scaled"], ["stateN"]),  # [2,B,128] + [B,1]: the batch axes must agree
        helper.make_node("ReduceMean", ["stateN"], ["output"], axes=[0, 2], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "vad", inputs, outputs, init)
    signature = {"inputs": [
        {"name": "input", "dtype": "float32", "shape": ["batch", "samples"], "example_shape": [1, 512],
         "values": None},
        {"name": "state", "dtype": "float32", "shape": [2, "batch", 128], "example_shape": [2, 1, 128],
         "values": None},
        {"name": "sr", "dtype": "int64", "shape": [], "example_shape": [], "values": [16000, 8000]}]}
    return _save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), directory, "vad",
                 **({"signature": signature} if hints else {}))


def grid32(directory: Path, *, hints: bool = True) -> Path:
    """images [N,3,H,W] -> cells [N,3,H/32,W/32], the mean of each 32x32 cell: a Reshape to
    [N, 3, H/32, 32, W/32, 32] (allowzero), which fails unless H and W are multiples of 32 (and at least 32)."""
    inputs = [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, "H", "W"])]
    outputs = [helper.make_tensor_value_info("cells", TensorProto.FLOAT, ["N", 3, "h", "w"])]
    init = [numpy_helper.from_array(np.array([32, 32], np.int64), "c32x2"),
            numpy_helper.from_array(np.array([32], np.int64), "c32"),
            numpy_helper.from_array(np.array([0], np.int64), "i0"),
            numpy_helper.from_array(np.array([1], np.int64), "i1"),
            numpy_helper.from_array(np.array([2], np.int64), "i2")]
    nodes = [
        helper.make_node("Shape", ["images"], ["nc"], start=0, end=2),
        helper.make_node("Shape", ["images"], ["hw"], start=2, end=4),
        helper.make_node("Div", ["hw", "c32x2"], ["cells_hw"]),
        helper.make_node("Slice", ["cells_hw", "i0", "i1"], ["h"]),
        helper.make_node("Slice", ["cells_hw", "i1", "i2"], ["w"]),
        helper.make_node("Concat", ["nc", "h", "c32", "w", "c32"], ["blocks"], axis=0),
        helper.make_node("Reshape", ["images", "blocks"], ["tiles"], allowzero=1),
        helper.make_node("ReduceMean", ["tiles"], ["cells"], axes=[3, 5], keepdims=0),
    ]
    graph = helper.make_graph(nodes, "grid32", inputs, outputs, init)
    signature = {"inputs": [{"name": "images", "dtype": "float32", "shape": ["N", 3, "H", "W"],
                             "example_shape": [1, 3, 64, 96], "values": None}]}
    return _save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), directory, "grid32",
                 **({"signature": signature} if hints else {}))


def zipmap(directory: Path, *, string_labels: bool = False) -> Path:
    """A scikit-learn classifier converted by skl2onnx with its default ZipMap (no text ops, so no locale)."""
    from skl2onnx import to_onnx
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    labels = np.array(["setosa", "versicolor", "virginica"])[y] if string_labels else y
    classifier = LogisticRegression(max_iter=500).fit(x.astype(np.float32), labels)
    proto = to_onnx(classifier, x[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3})
    return _save(proto, directory, "iris")


def scaled(directory: Path, factor: float, name: str = "scaled") -> Path:
    """y = x * factor, x FP32 [batch, 3]: versions of one model that answer apart."""
    graph = helper.make_graph([helper.make_node("Mul", ["x", "factor"], ["y"])], "scaled",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3])],
                              [numpy_helper.from_array(np.array(factor, dtype=np.float32), "factor")])
    return _save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), directory, name)
