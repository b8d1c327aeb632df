"""Repairs onnxruntime's float16 converter needs around control flow (If / Loop / Scan bodies), found on the corpus'
silero VAD models (tests/corpus):

- `unique_initializers`, before converting: the converter tracks float initializers by name across all graphs and
  asserts that no name repeats, but two branches of an If may each hold an initializer of the same name (onnxslim
  and exporters write them). Repeats are renamed within the subgraph that holds them, with every use in its scope.
- `hoisted_casts`, after converting: for an op kept in float32 inside a subgraph, the converter adds the Cast that
  feeds it to the main graph, where its input (a value of the subgraph) does not exist, and onnxruntime refuses the
  model ("Node input '182' is not a graph input, initializer, or output of a previous node"). Such a Cast moves
  into the subgraph that produces its input.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnx


def walk(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    """`graph` and every subgraph in it, outermost first."""
    yield graph
    for child in _children(graph):
        yield from walk(child)


def _children(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    for node in graph.node:
        for attr in node.attribute:
            if attr.HasField("g"):
                yield attr.g
            yield from attr.graphs


def _rename_uses(graph: onnx.GraphProto, old: str, new: str) -> None:
    """Replace reads of `old` in `graph` and its subgraphs, down to a subgraph that defines `old` itself."""
    for node in graph.node:
        for index, name in enumerate(node.input):
            if name == old:
                node.input[index] = new
    for value in graph.output:
        if value.name == old:
            value.name = new
    for child in _children(graph):
        if old not in {i.name for i in child.initializer} | {o for n in child.node for o in n.output}:
            _rename_uses(child, old, new)


def unique_initializers(model: onnx.ModelProto) -> int:
    """Rename initializers of subgraphs whose names another graph's initializers have; returns how many."""
    seen = {init.name for init in model.graph.initializer}
    renamed = 0
    pending = list(_children(model.graph))
    while pending:
        graph = pending.pop(0)
        for init in graph.initializer:
            if init.name in seen:
                new = f"{init.name}__{graph.name or 'sub'}_{renamed}"
                _rename_uses(graph, init.name, new)
                init.name = new
                renamed += 1
            seen.add(init.name)
        pending.extend(_children(graph))
    return renamed


def hoisted_casts(model: onnx.ModelProto) -> int:
    """Move main-graph Casts whose input only a subgraph produces into that subgraph; returns how many moved."""
    graph = model.graph
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {
        o for n in graph.node for o in n.output}
    producers: dict[str, onnx.GraphProto] = {}
    pending = list(_children(graph))
    while pending:
        sub = pending.pop(0)
        for node in sub.node:
            for out in node.output:
                producers.setdefault(out, sub)
        pending.extend(_children(sub))
    moved = 0
    for node in list(graph.node):
        source = node.input[0] if node.input else None
        if node.op_type == "Cast" and source not in available and source in producers:
            producers[source].node.append(node)
            graph.node.remove(node)
            moved += 1
    return moved
