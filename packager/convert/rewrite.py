"""Graph rewrites convert applies to any model before it is checked and shipped; each returns a note or None.

- Old models (IR < 4) list every initializer as a graph input too. Those are weights, not inputs: left in, they
  break tools that take every graph input for a feed (onnxruntime's quantization pre-processing asks for
  `…__SHAPE` inputs). They are removed from the inputs and the IR version raised to 4, the first that allows it.
- ZipMap (scikit-learn classifiers' `probabilities` as a sequence of {class: probability} maps) has no tensor
  type, so no v2 client could read it. Unless asked to keep it, it becomes an Identity of its input: the same
  probabilities as a (rows, classes) float tensor under the same output name, columns in the ZipMap's class order
  (recorded in the card).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx


def drop_initializer_inputs(model: onnx.ModelProto) -> str | None:
    """Remove graph inputs that are initializers (weights); mutates `model`."""
    weights = {init.name for init in model.graph.initializer}
    kept = [value for value in model.graph.input if value.name not in weights]
    dropped = len(model.graph.input) - len(kept)
    if not dropped:
        return None
    del model.graph.input[:]
    model.graph.input.extend(kept)
    old = model.ir_version
    model.ir_version = max(old, 4)
    return (f"{dropped} initializers were also listed as graph inputs (IR {old}); removed from the inputs"
            + (", IR version raised to 4" if old < 4 else ""))


def tensor_zipmaps(model: onnx.ModelProto) -> tuple[str | None, dict[str, Any]]:
    """Replace ZipMap nodes that produce graph outputs by an Identity of their probability tensor; mutates
    `model`. Returns a note and, per rewritten output, its class labels in column order."""
    from onnx import TensorProto, helper

    outputs = {value.name: value for value in model.graph.output}
    labels: dict[str, Any] = {}
    for index, node in enumerate(model.graph.node):
        if node.op_type != "ZipMap" or node.domain != "ai.onnx.ml" or node.output[0] not in outputs:
            continue
        attrs = {a.name: a for a in node.attribute}
        classes: list[Any] = (list(attrs["classlabels_int64s"].ints) if "classlabels_int64s" in attrs
                              else [s.decode() for s in attrs["classlabels_strings"].strings]
                              if "classlabels_strings" in attrs else [])
        name = node.output[0]
        model.graph.node[index].CopyFrom(helper.make_node("Identity", [node.input[0]], [name], name=node.name))
        value = outputs[name]
        value.type.CopyFrom(helper.make_tensor_type_proto(TensorProto.FLOAT, ["batch", len(classes) or None]))
        labels[name] = classes
    if not labels:
        return None, {}
    return (f"ZipMap output(s) {sorted(labels)} served as (rows, classes) float tensors, columns in class order "
            f"(pass --zipmap to keep the maps)"), labels
