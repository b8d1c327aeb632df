"""Graph rewrites convert applies to any model before it is checked and shipped; each returns a note or None.

- Old models (IR < 4) list every initializer as a graph input too. Those are weights, not inputs: left in, they
  break tools that take every graph input for a feed (onnxruntime's quantization pre-processing asks for
  `…__SHAPE` inputs). They are removed from the inputs and the IR version raised to 4, the first that allows it.
- A converter may add graph inputs the source's signature does not have (tf2onnx: the tensors a TensorFlow function
  captures). Unread ones are removed; a read one refuses the conversion (`signature_inputs_only`).
- ZipMap (scikit-learn classifiers' `probabilities` as a sequence of {class: probability} maps) has no tensor
  type, so no v2 client could read it. Unless asked to keep it, it becomes an Identity of its input: the same
  probabilities as a (rows, classes) float tensor under the same output name, columns in the ZipMap's class order
  (recorded in the card).
- log(sigmoid(x)) (PyTorch's F.logsigmoid exports as a Log of a Sigmoid) gives -inf once
  sigmoid(x) underflows to 0, below x = -88 in float32, where the source answers -x; it becomes -softplus(-x), the
  same values computed without that underflow (onnxruntime's Softplus is exact for large |x|). Converted models
  only: an ONNX source is the reference it is checked against.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mlpk.packager.errors import ConversionError

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


def _names_read(graph: onnx.GraphProto) -> set[str]:
    """Every value name a node of `graph` or of its subgraphs (If, Loop, Scan bodies, which may read outer values)
    takes as input."""
    read: set[str] = set()
    for node in graph.node:
        read.update(node.input)
        for attribute in node.attribute:
            for sub in (attribute.g,) if attribute.HasField("g") else attribute.graphs:
                read |= _names_read(sub)
    return read


def signature_inputs_only(model: onnx.ModelProto, signature: Sequence[str], source: str) -> str | None:
    """Keep only the graph inputs the source's own signature takes; mutates `model`. A converter may list more: tf2onnx
    turns the tensors a TensorFlow function captures into graph inputs even after folding their values into the graph
    (basic-pitch's SavedModel came out with three unused `5756:0`-like inputs that every client would have had to
    send). Unread ones are removed; one the graph reads cannot be, and the conversion is refused."""
    wanted = set(signature)
    extra = [value.name for value in model.graph.input if value.name not in wanted]
    if not extra:
        return None
    read = _names_read(model.graph) | {value.name for value in model.graph.output}
    needed = [name for name in extra if name in read]
    if needed:
        raise ConversionError(f"{source}: the converted graph reads inputs {needed} that the model's signature "
                              f"({sorted(wanted)}) does not take: values the converter could not freeze",
                              hint="save the model with its weights as variables, or export it with tf2onnx yourself "
                                   "and give mlpack the .onnx")
    kept = [value for value in model.graph.input if value.name in wanted]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    return f"removed {len(extra)} graph inputs the signature does not take and no node reads: {', '.join(extra)}"


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


def stable_log_sigmoid(model: onnx.ModelProto) -> str | None:
    """Each Log of a Sigmoid in the main graph as -Softplus(-x) (module docstring); mutates `model`."""
    import onnx

    graph = model.graph
    producers = {name: node for node in graph.node for name in node.output}
    nodes: list[onnx.NodeProto] = []
    replaced = 0
    for node in graph.node:
        sigmoid = producers.get(node.input[0]) if node.op_type == "Log" and node.domain in ("", "ai.onnx") else None
        if sigmoid is None or sigmoid.op_type != "Sigmoid" or sigmoid.domain not in ("", "ai.onnx"):
            nodes.append(node)
            continue
        out, base = node.output[0], f"{node.output[0]}__mlpack_log_sigmoid"
        nodes.extend([onnx.helper.make_node("Neg", [sigmoid.input[0]], [f"{base}_negated"], name=f"{base}_neg_in"),
                      onnx.helper.make_node("Softplus", [f"{base}_negated"], [f"{base}_softplus"],
                                            name=f"{base}_softplus"),
                      onnx.helper.make_node("Neg", [f"{base}_softplus"], [out], name=f"{base}_neg_out")])
        replaced += 1
    if not replaced:
        return None
    read = {name for node in nodes for name in node.input} | {value.name for value in graph.output}
    kept = [node for node in nodes if node.op_type != "Sigmoid" or any(name in read for name in node.output)]
    del graph.node[:]
    graph.node.extend(kept)
    return (f"log(sigmoid(x)) computed as -softplus(-x) ({replaced} place{'s' if replaced > 1 else ''}): the same "
            "values, without the -inf that sigmoid's underflow to 0 gives below x = -88")
