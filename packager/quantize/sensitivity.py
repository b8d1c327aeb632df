"""Per-node error: which quantized nodes hurt most, so the fallback can keep exactly those in float.

Both models are run on a few evaluation samples with the outputs of the candidate nodes exposed (quantize_static,
quantize_dynamic and the FP16 converter keep each node's output tensor name). A node's own error is the relative
L2 error of its output minus the largest relative error among its activation inputs: what the node added on top
of what reached it. This is the ranking ONNX Runtime's qdq_loss_debug tooling supports by hand (matching tensors
before and after quantization); here it is automated and reduced to one number per node.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mlpk.packager.quantize import gate
from mlpk.packager.quantize.data import Dataset

if TYPE_CHECKING:
    import onnx


# Ops that carry their input's quantization through unchanged (QDQ shares one scale across them): keeping a
# tensor in float means keeping these and the node that produced their input in float too.
PASS_THROUGH = ("Relu", "Clip", "MaxPool", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Flatten", "Slice",
                "Split", "Pad", "Resize", "Gather", "Identity", "Dropout")


@dataclass(frozen=True, slots=True)
class NodeError:
    node: str
    op_type: str
    error: float  # relative L2 error the node adds
    group: tuple[str, ...]  # the node, and (with neighbours) the nodes that must stay float with it


def rank(reference: Path, candidate: Path, probe: Dataset, op_types: tuple[str, ...], batch: int,
         workdir: Path, neighbours: bool) -> list[NodeError]:
    """Nodes of `op_types` in `reference`, most harmful first (only those with a measurable error).

    With `neighbours` (QDQ and FP16, where a tensor is quantized on the producer's side too), each node's group
    also holds the pass-through ops feeding it and the node that produced their input, so that excluding the group
    really leaves the tensor entering the node in float."""
    import onnx

    ref_model = onnx.load(str(reference))
    cand_model = onnx.load(str(candidate))
    produced = {out for node in cand_model.graph.node for out in node.output}
    graph_inputs = {i.name for i in ref_model.graph.input}
    initializers = {t.name for t in ref_model.graph.initializer}
    producers = {out: n for n in ref_model.graph.node for out in n.output}
    nodes = [n for n in ref_model.graph.node if n.op_type in op_types and n.output and n.output[0] in produced]
    if not nodes:
        return []
    watched: set[str] = set()
    for node in nodes:
        watched.add(node.output[0])
        watched.update(i for i in node.input if i and i not in initializers and (i in produced or i in graph_inputs))
    ref_out = _run_exposed(ref_model, watched, probe, batch, workdir / "sens-ref.onnx")
    cand_out = _run_exposed(cand_model, watched, probe, batch, workdir / "sens-cand.onnx")
    feeds = probe.parts[0]  # the input names

    def error(name: str) -> float:
        if name in feeds:
            return 0.0
        ref, got = ref_out.get(name), cand_out.get(name)
        if ref is None or got is None or ref.shape != got.shape:
            return 0.0
        ref64, got64 = ref.astype(np.float64), got.astype(np.float64)
        if not np.all(np.isfinite(got64)):
            return float("inf")
        norm = float(np.linalg.norm(ref64))
        return float(np.linalg.norm(ref64 - got64)) / norm if norm > 0 else float(np.linalg.norm(got64))

    ranked = []
    for node in nodes:
        inputs = [error(i) for i in node.input if i in ref_out or i in feeds]
        added = error(node.output[0]) - max(inputs, default=0.0)
        if added > 0:
            group = _upstream(node, producers) if neighbours else (node.name,)
            ranked.append(NodeError(node.name, node.op_type, added, group))
    return sorted(ranked, key=lambda n: n.error, reverse=True)


def _upstream(node: onnx.NodeProto, producers: dict[str, onnx.NodeProto]) -> tuple[str, ...]:
    """`node`, the pass-through chains feeding its inputs, and the nodes that produced those chains' inputs."""
    group = [node.name]
    for name in node.input:
        producer = producers.get(name)
        while producer is not None:
            group.append(producer.name)
            if producer.op_type not in PASS_THROUGH or not producer.input:
                break
            producer = producers.get(producer.input[0])
    return tuple(dict.fromkeys(group))


def _run_exposed(model: onnx.ModelProto, names: set[str], probe: Dataset, batch: int,
                 path: Path) -> dict[str, np.ndarray]:
    """Run `model` with the float tensors in `names` added as graph outputs; returns those that are float."""
    import onnx
    from onnx import TensorProto, helper

    model = onnx.ModelProto.FromString(model.SerializeToString())
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - shape inference is a best effort here; unknown types are skipped
        inferred = model
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *inferred.graph.output,
                                                             *inferred.graph.input)}
    existing = {o.name for o in model.graph.output}
    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE)
    exposed = sorted(n for n in names if types.get(n) in floats)
    for name in exposed:
        if name not in existing:
            model.graph.output.append(helper.make_tensor_value_info(name, types[name], None))
    onnx.save(model, str(path))
    session = gate.open_session(path)
    outputs = gate.run(session, probe, batch, exposed)
    return {k: np.asarray(v).astype(np.float32) for k, v in outputs.items()}
