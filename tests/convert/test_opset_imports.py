"""A domain listed twice in a model's opset imports (skl2onnx writes "" twice for pipelines) is merged on
conversion: onnxruntime loads such models, but its quantization tools refuse them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper

from mlpk.packager.convert.compat import merge_opsets
from mlpk.packager.convert.pipeline import convert


def _model(opsets: list[tuple[str, int]]) -> onnx.ModelProto:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "relu",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets], ir_version=8)


def test_duplicates_merge_to_the_highest_version_per_domain() -> None:
    model = _model([("ai.onnx.ml", 1), ("", 17), ("ai.onnx", 15), ("ai.onnx.ml", 3)])
    note = merge_opsets(model)
    assert sorted((e.domain, e.version) for e in model.opset_import) == [("", 17), ("ai.onnx.ml", 3)]
    assert note is not None and "ai.onnx 17, ai.onnx 15" in note


def test_a_clean_model_is_left_alone() -> None:
    model = _model([("", 17), ("ai.onnx.ml", 3)])
    assert merge_opsets(model) is None
    assert [(e.domain, e.version) for e in model.opset_import] == [("", 17), ("ai.onnx.ml", 3)]


def test_convert_writes_one_import_per_domain_and_notes_it(tmp_path: Path) -> None:
    source = tmp_path / "dup.onnx"
    onnx.save(_model([("", 17), ("", 17)]), str(source))
    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    result = convert(source, tmp_path / "out.onnx", sample_data=tmp_path / "x.npz")
    written = onnx.load(str(tmp_path / "out.onnx"))
    assert [(e.domain, e.version) for e in written.opset_import] == [("", 17)]
    assert any("opset imports merged" in note for note in result.notes)
