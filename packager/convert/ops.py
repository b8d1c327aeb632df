"""Ops in a graph that onnxruntime cannot run, named in the errors that refuse it:

- ops in the standard domains that ONNX does not define: converters (tf2onnx in particular) log ops they could not
  map and leave them under their framework name, and hand-made models may hold a misspelt or invented op;
- ops of a custom domain (`com.example:MyOp`): they run only where the library implementing them is registered,
  which stock onnxruntime, and so every mlpack image, does not have.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING

from mlpk.packager.errors import ConversionError

if TYPE_CHECKING:
    import onnx

_STANDARD = ("", "ai.onnx", "ai.onnx.ml", "ai.onnx.preview.training")
# onnxruntime's own (contrib) domains, implemented by every onnxruntime build
_ORT = ("com.microsoft", "com.microsoft.nchwc", "com.microsoft.experimental", "com.ms.internal.nhwc")


def _nodes(graph: onnx.GraphProto) -> Iterator[onnx.NodeProto]:  # subgraphs included
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
        listed = listing(unknown)
        raise ConversionError(f"{source}: {converter} cannot convert the op(s) {listed} to ONNX; nothing written",
                              hint="replace these ops in the model, or implement them as ONNX custom ops")


def custom_ops(model: onnx.ModelProto) -> Counter[str]:
    """`domain:op` of the nodes in a domain neither ONNX nor onnxruntime defines (and no local function defines)."""
    local = {(f.domain, f.name) for f in model.functions}
    found: Counter[str] = Counter()
    for node in _nodes(model.graph):
        if node.domain not in _STANDARD and node.domain not in _ORT and (node.domain, node.op_type) not in local:
            found[f"{node.domain}:{node.op_type}"] += 1
    return found


def listing(ops: Counter[str]) -> str:
    """`A, B (x2)`, sorted, for messages."""
    return ", ".join(f"{op} (x{n})" if n > 1 else op for op, n in sorted(ops.items()))


def opset(model: onnx.ModelProto, domain: str = "") -> int | None:
    """The opset the model imports for `domain` ('' and 'ai.onnx' are the same)."""
    names = ("", "ai.onnx") if domain in ("", "ai.onnx") else (domain,)
    return next((e.version for e in model.opset_import if e.domain in names), None)
