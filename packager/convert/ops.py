"""Ops in a converted graph that no ONNX runtime can run: converters (tf2onnx in particular) log ops they could not
map and leave them in the graph under their framework name; we turn that into a ConversionError naming them."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from mlpk.packager.errors import ConversionError

if TYPE_CHECKING:
    import onnx

_STANDARD = ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training")


def _nodes(graph: onnx.GraphProto):  # noqa: ANN202 - a generator of NodeProto, subgraphs included
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.g.node:
                yield from _nodes(attr.g)
            for sub in attr.graphs:
                yield from _nodes(sub)


def unknown_ops(model: onnx.ModelProto) -> Counter[str]:
    """Ops in the standard domains that ONNX does not define (and that no local function defines)."""
    from onnx import defs

    local = {(f.domain, f.name) for f in model.functions}
    unknown: Counter[str] = Counter()
    for node in _nodes(model.graph):
        domain = node.domain if node.domain != "ai.onnx" else ""
        if domain in _STANDARD and (node.domain, node.op_type) not in local and not defs.has(node.op_type, domain):
            unknown[node.op_type] += 1
    return unknown


def check_ops(model: onnx.ModelProto, source: str, converter: str) -> None:
    """Raise ConversionError naming every op the converter left unconverted."""
    unknown = unknown_ops(model)
    if unknown:
        listed = ", ".join(f"{op} (x{n})" if n > 1 else op for op, n in sorted(unknown.items()))
        raise ConversionError(f"{source}: {converter} cannot convert the op(s) {listed} to ONNX; nothing written",
                              hint="replace these ops in the model, or implement them as ONNX custom ops")
