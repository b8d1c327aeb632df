"""A converted graph takes the inputs its source's signature takes, no more: tf2onnx lists the tensors a TensorFlow
function captures as graph inputs (basic-pitch's SavedModel: three unused `5756:0`-like ones). Unread extras are
removed; one the graph reads, here or in a subgraph, refuses the conversion."""

from __future__ import annotations

import pytest

from mlpk.packager.convert.rewrite import signature_inputs_only
from mlpk.packager.errors import ConversionError


def _model(reads_capture: str = ""):  # noqa: ANN202 - an onnx.ModelProto
    """x[n, 4] -> Relu -> y, with a float input `cap` that nothing reads, Add reads, or an If branch reads."""
    from onnx import TensorProto, helper

    nodes = [helper.make_node("Relu", ["x"], ["r"])]
    if reads_capture == "node":
        nodes.append(helper.make_node("Add", ["r", "cap"], ["y"]))
    elif reads_capture == "subgraph":
        branch = helper.make_graph([helper.make_node("Add", ["r", "cap"], ["b"])], "then", [],
                                   [helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n", 4])])
        other = helper.make_graph([helper.make_node("Identity", ["r"], ["c"])], "else", [],
                                  [helper.make_tensor_value_info("c", TensorProto.FLOAT, ["n", 4])])
        nodes += [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0),
                  helper.make_node("Greater", ["s", "zero"], ["positive"]),
                  helper.make_node("If", ["positive"], ["y"], then_branch=branch, else_branch=other)]
    else:
        nodes.append(helper.make_node("Identity", ["r"], ["y"]))
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
                     helper.make_tensor_value_info("cap", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_an_input_the_signature_lacks_and_no_node_reads_is_removed() -> None:
    import onnx

    model = _model()
    note = signature_inputs_only(model, ["x"], "nmp")
    assert note is not None and "cap" in note and "removed 1 graph inputs" in note
    assert [i.name for i in model.graph.input] == ["x"]
    onnx.checker.check_model(model, full_check=True)


@pytest.mark.parametrize("where", ["node", "subgraph"])
def test_an_input_the_signature_lacks_but_the_graph_reads_refuses_the_conversion(where: str) -> None:
    model = _model(where)
    with pytest.raises(ConversionError, match=r"reads inputs \['cap'\] that the model's signature \(\['x'\]\)"):
        signature_inputs_only(model, ["x"], "nmp")
    assert [i.name for i in model.graph.input] == ["x", "cap"]  # nothing changed


def test_a_graph_with_the_signatures_inputs_is_left_as_it_is() -> None:
    model = _model()
    before = model.SerializeToString()
    assert signature_inputs_only(model, ["x", "cap"], "nmp") is None
    assert model.SerializeToString() == before
