"""Tiny ONNX models for the runtime's tests, generated with onnx.helper (no committed blobs).

- `every_dtype`: one input per v2 datatype, each echoed by Identity, with a dynamic batch axis.
- `mixed`: several inputs and outputs of different datatypes doing real arithmetic (MatMul+Add in fp32, Mul in
  fp16, Add in int64, Not on bool, Identity on strings), dynamic batch axis.
- `heavy`: a chain of MatMuls whose run time grows with the batch size, for draining and concurrency tests.
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


def _save(model: onnx.ModelProto, directory: Path, name: str, card: bool = True) -> Path:
    onnx.checker.check_model(model)
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save(model, directory / "model.onnx")
    if card:
        (directory / "model-card.json").write_text(json.dumps({
            "schema": "mlpack.model-card/v1", "name": name, "mlpack_version": "0", "source": None,
            "inputs": [], "outputs": [], "parity": None, "quantization": None, "unknown_key_is_ignored": 1}))
    return directory


def every_dtype(directory: Path) -> Path:
    inputs = [helper.make_tensor_value_info(f"in_{name.lower()}", code, ["batch", 2]) for name, code in DTYPES.items()]
    outputs = [helper.make_tensor_value_info(f"out_{name.lower()}", code, ["batch", 2])
               for name, code in DTYPES.items()]
    nodes = [helper.make_node("Identity", [f"in_{n.lower()}"], [f"out_{n.lower()}"]) for n in DTYPES]
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
