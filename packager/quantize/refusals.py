"""What onnxruntime refused in a candidate model, read from its load error, and what to keep in float32 for it.

FP16 conversion can yield graphs onnxruntime will not load: an op whose schema or CPU kernels have no float16 form
(`Could not find an implementation for OP(VER) node with name 'N'`, NOT_IMPLEMENTED; `Type 'tensor(float16)' of
input parameter ... of operator (OP) in node (N) is invalid`), or a type clash at one node (`Type (tensor(float)) of
output arg (X) of node (N) does not match expected type (tensor(float16))`). Each names an op or a node, which the
FP16 method then keeps in float32 (methods.Fp16.apply).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import onnx


@dataclass(frozen=True, slots=True)
class KeptInFloat:
    """An op type (all its nodes: `node` is None) or one node that the FP16 candidate keeps in float32 because
    onnxruntime would not load it in float16, with onnxruntime's reason."""

    op_type: str
    node: str | None
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op_type, "node": self.node, "reason": self.reason}

    def describe(self) -> str:
        return f"{self.op_type} node '{self.node}'" if self.node else self.op_type


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why onnxruntime refused a model, read from its message: the reason, and the op and node it names (if any).
    `per_op`: the op type itself has no float16 form (kernel or schema), so every node of it must stay float."""

    reason: str
    op_type: str | None = None
    node: str | None = None
    per_op: bool = False


# onnxruntime's load errors that name what it refused (onnxruntime/core/framework/session_state.cc, graph.cc and
# ONNX's type checker): (pattern, per_op); named groups op / node.
_REFUSALS = (
    (re.compile(r"Could not find an implementation for (?P<op>\w+)\(\d+\) node with name '(?P<node>[^']*)'"), True),
    (re.compile(r"Type '?tensor\(\w+\)'? of input parameter \([^)]*\) of operator \((?P<op>\w+)\) in node "
                r"\((?P<node>[^)]*)\) is invalid"), True),
    (re.compile(r"of output arg \([^)]*\) of node \((?P<node>[^)]*)\) does not match expected type"), False),
    (re.compile(r"bound to different types \([^)]*\) in node \((?P<node>[^)]*)\)"), False),
    (re.compile(r"in node \((?P<node>[^)]+)\)"), False),
)


def read(message: str) -> Refusal:
    """The Refusal in one of onnxruntime's error messages (as gate.check_loads reports them)."""
    reason = re.sub(r"^onnxruntime cannot load \S+: ", "", ort_reason(message))
    for pattern, per_op in _REFUSALS:
        found = pattern.search(message)
        if found:
            groups = found.groupdict()
            return Refusal(reason, groups.get("op"), groups.get("node") or None, per_op)
    return Refusal(reason)


_MARKER = re.compile(r"(?:onnxruntime\.capi\.\S+: )?\[ONNXRuntimeError\] : \d+ : ")


def ort_reason(message: str) -> str:
    """`message` on one line with onnxruntime's reason kept and its noise cut: the exception class path, the
    repeated "[ONNXRuntimeError] : N :" headers, "Load model from X failed:" and source locations with C++
    signatures ("/onnxruntime_src/onnxruntime/core/graph/graph.cc:1483 onnxruntime::Graph::Graph(...)")."""
    text = " ".join(message.split())
    first = _MARKER.search(text)
    if first is None:
        return text
    reason = _MARKER.split(text)[-1]
    reason = re.sub(r"^(\w+) : Load model from \S+ failed:", r"\1 : ", reason)
    reason = re.sub(r"/onnxruntime_src/\S+ (?:\S+::)+\S+\(.*?\) ", "", reason).strip()
    return text[:first.start()] + reason


def keep_in_float(model: onnx.ModelProto, refused: Refusal) -> tuple[KeptInFloat, ...]:
    """What to keep in float32 in `model` (the FP32 graph) so that `refused` does not recur; () when nothing named
    in it can be kept. The converter blocks ops only in the main graph (it inserts the casts there), so an op
    refused inside a Loop / If / Scan body keeps its whole enclosing node in float."""
    top = {n.name: n for n in model.graph.node}
    if refused.per_op and refused.op_type:
        kept = [KeptInFloat(refused.op_type, None, refused.reason)] if any(
            n.op_type == refused.op_type for n in top.values()) else []
        return (*kept, *(KeptInFloat(n.op_type, n.name, f"holds {refused.op_type}: {refused.reason}")
                         for n in top.values() if _inner_ops(n) & {refused.op_type}))
    if refused.node in top:
        return (KeptInFloat(top[refused.node].op_type, refused.node, refused.reason),)
    return tuple(KeptInFloat(n.op_type, n.name, f"holds node '{refused.node}': {refused.reason}")
                 for n in top.values() if refused.node and refused.node in _inner_names(n))


def _subgraphs(node: onnx.NodeProto) -> Iterator[onnx.GraphProto]:
    for attribute in node.attribute:
        if attribute.g.node:
            yield attribute.g
        yield from attribute.graphs


def _inner_nodes(node: onnx.NodeProto) -> Iterator[onnx.NodeProto]:
    for graph in _subgraphs(node):
        for inner in graph.node:
            yield inner
            yield from _inner_nodes(inner)


def _inner_ops(node: onnx.NodeProto) -> set[str]:
    return {n.op_type for n in _inner_nodes(node)}


def _inner_names(node: onnx.NodeProto) -> set[str]:
    return {n.name for n in _inner_nodes(node)}


def outer_reads(node: onnx.NodeProto) -> set[str]:
    """The names the subgraphs of `node` read (outer-scope values among them)."""
    return {x for inner in _inner_nodes(node) for x in inner.input}
