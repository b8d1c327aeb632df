"""Small ONNX models for export tests, generated (not committed): an MLP classifier whose weights come from a seed,
so two seeds give a model-only change."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def mlp(directory: Path, seed: int = 0, name: str = "mlp", hidden: int = 32) -> Path:
    """`directory/NAME.onnx`: x float32[batch, 16] -> probabilities float32[batch, 4], plus NAME-data.npz."""
    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.5, (16, hidden)).astype(np.float32)
    b1 = rng.normal(0, 0.1, hidden).astype(np.float32)
    w2 = rng.normal(0, 0.5, (hidden, 4)).astype(np.float32)
    b2 = rng.normal(0, 0.1, 4).astype(np.float32)
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Gemm", ["hr", "w2", "b2"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 16])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", 4])],
        [numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.onnx"
    onnx.save(model, str(path))
    data = np.random.default_rng(seed + 100).normal(0, 1, (64, 16)).astype(np.float32)
    np.savez(directory / f"{name}-data.npz", x=data)
    return path
