"""What a model takes: one `Signature` value that convert, parity, quantize, the gate, warm-up and the card share.

Per input: name, dtype, each dimension fixed (int), symbolic (a name) or unknown (None); whether it is a scalar, a
recurrent state (fed back from an output: zeros start it), and what the graph itself says about it:
- `values`: the constants the graph compares a (scalar) input with, e.g. a voice model's `sr` checked against
  8000 and 16000 (Equal / If on the input): synthetic data must use one of them;
- `example_shape`: a concrete shape known to run, from the user's data or found by `probe` (a detector whose H and
  W must be multiples of 32; a transformer traced at one sequence length although its axes are declared dynamic).
Probing tries sizes the graph's own small integer constants suggest before common sizes, within a time budget.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from mlpk.packager.card import Dim, TensorSpec, graph_inputs, graph_outputs
from mlpk.packager.errors import InputError
from mlpk.packager.onnxrt import error_text

if TYPE_CHECKING:
    import onnx

# Sizes tried for free (symbolic or unknown) dimensions when the graph suggests none that run: multiples of 32 first
# (strided detectors and U-Nets), then the usual image, sequence and audio sizes.
COMMON_SIZES = (32, 64, 16, 8, 128, 224, 4, 1, 2, 3, 256, 512, 96, 160, 320, 640, 10, 100, 1024)
PROBE_TRIES = 32
PROBE_SECONDS = 30.0
_STATE_WORDS = re.compile(r"(state|hidden|cache|past|memory|carry|^h0$|^c0$|^h$|^c$|^hx$|^cx$)", re.IGNORECASE)
_COMPARE_OPS = frozenset({"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"})
# ai.onnx.ml ops that hold the categories a string input was trained on (skl2onnx writes them for OneHotEncoder,
# OrdinalEncoder, LabelEncoder): generated strings drawn from them exercise real categories.
_CATEGORY_ATTRS = {"OneHotEncoder": "cats_strings", "CategoryMapper": "cats_strings", "LabelEncoder": "keys_strings"}
_PASS_THROUGH = frozenset({"Cast", "Squeeze", "Unsqueeze", "Reshape", "Identity", "Flatten"})


@dataclass(frozen=True, slots=True)
class InputSignature:
    """One model input as every stage needs to know it (see the module docstring)."""

    name: str
    dtype: str  # a numpy dtype name, or "str"
    shape: tuple[Dim, ...] | None  # None: unknown rank
    state: bool = False
    values: tuple[float | str, ...] = ()
    example_shape: tuple[int, ...] | None = None

    @property
    def spec(self) -> TensorSpec:
        return TensorSpec(self.name, self.dtype, self.shape)

    @property
    def scalar(self) -> bool:
        return self.shape == ()

    def describe(self) -> str:
        """`sr: int64[] (scalar, values 16000, 8000)`, for messages."""
        extra = [word for word, flag in (("scalar", self.scalar), ("state", self.state)) if flag]
        if self.values:
            shown = [f"{v:g}" if isinstance(v, float) else repr(v) for v in self.values[:6]]
            extra.append("values " + ", ".join(shown) + (", …" if len(self.values) > 6 else ""))
        return self.spec.render() + (f" ({'; '.join(extra)})" if extra else "")

    def to_dict(self) -> dict[str, Any]:
        return {**self.spec.to_dict(), "scalar": self.scalar, "state": self.state, "values": list(self.values),
                "example_shape": None if self.example_shape is None else list(self.example_shape)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> InputSignature:
        spec = TensorSpec.from_dict(dict(data))
        example = data.get("example_shape")
        return cls(spec.name, spec.dtype, spec.shape, bool(data.get("state", False)),
                   tuple(v if isinstance(v, str) else float(v) for v in data.get("values") or ()),
                   None if example is None else tuple(int(d) for d in example))


@dataclass(frozen=True, slots=True)
class Signature:
    """A model's inputs and outputs; `examples_from` says where the example shapes came from."""

    inputs: tuple[InputSignature, ...]
    outputs: tuple[TensorSpec, ...]
    examples_from: str = "none"  # "sample data NAME" | "probe" | "fixed shapes" | "none"

    def input(self, name: str) -> InputSignature | None:
        return next((item for item in self.inputs if item.name == name), None)

    @property
    def specs(self) -> tuple[TensorSpec, ...]:
        return tuple(item.spec for item in self.inputs)

    @property
    def stackable(self) -> bool:
        """Whether samples stack along a shared first axis: every input has rank >= 1 and the first dimensions
        are all free (a batch axis) or all the same fixed size (a fixed batch)."""
        firsts = [item.shape[0] for item in self.inputs if item.shape]
        if len(firsts) != len(self.inputs) or not firsts:
            return False
        fixed = {d for d in firsts if isinstance(d, int)}
        return not fixed or (len(fixed) == 1 and len(firsts) == sum(isinstance(d, int) for d in firsts))

    @property
    def fixed_batch(self) -> int | None:
        """The fixed first dimension shared by every input (a model exported for batch 1), if any."""
        firsts = {item.shape[0] for item in self.inputs if item.shape}
        first = next(iter(firsts)) if len(firsts) == 1 else None
        return first if self.stackable and isinstance(first, int) else None

    @property
    def runnable(self) -> bool:
        """Whether every input has a concrete example shape (so data can be made for it)."""
        return all(item.example_shape is not None for item in self.inputs)

    def describe(self) -> str:
        return ", ".join(item.describe() for item in self.inputs)

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": [item.to_dict() for item in self.inputs], "outputs": [o.to_dict() for o in self.outputs],
                "examples_from": self.examples_from}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Signature:
        return cls(tuple(InputSignature.from_dict(item) for item in data.get("inputs") or ()),
                   tuple(TensorSpec.from_dict(item) for item in data.get("outputs") or ()),
                   str(data.get("examples_from", "none")))

    def with_examples(self, feed: Mapping[str, np.ndarray], origin: str) -> Signature:
        """This signature with the shapes of `feed` (a feed that ran) as example shapes."""
        inputs = tuple(replace(item, example_shape=tuple(int(d) for d in np.shape(feed[item.name])))
                       if item.name in feed else item for item in self.inputs)
        return replace(self, inputs=inputs, examples_from=origin)


# --- learning it from the graph ------------------------------------------------------------------------------------

def from_model(model: onnx.ModelProto) -> Signature:
    """The signature the graph declares: inputs that are not initializers, state inputs, compared-with values;
    inputs whose shapes are fully fixed get their own shape as example."""
    inputs = graph_inputs(model)
    outputs = graph_outputs(model)
    constants = _constants(model)
    items = []
    for spec in inputs:
        dims = tuple(d for d in spec.shape or () if isinstance(d, int))
        fixed = spec.shape is not None and len(dims) == len(spec.shape)
        items.append(InputSignature(spec.name, spec.dtype, spec.shape, _is_state(spec, outputs),
                                    _compared_values(model, spec.name, constants), dims if fixed else None))
    examples = "fixed shapes" if items and all(i.example_shape is not None for i in items) else "none"
    return Signature(tuple(items), outputs, examples)


def _is_state(spec: TensorSpec, outputs: Sequence[TensorSpec]) -> bool:
    """A recurrent state: named like one, or fed back from an output of the same dtype and rank whose name is the
    input's with a suffix (`state` -> `stateN`, `h0` -> `hn`, `past_k` -> `present_k`)."""
    if spec.dtype not in ("float32", "float16", "float64") or not spec.shape:
        return False
    if _STATE_WORDS.search(spec.name):
        return True
    stem = spec.name.rstrip("0123456789_").lower()
    return bool(stem) and any(o.name.lower() != spec.name.lower() and o.name.lower().startswith(stem)
                              and o.dtype == spec.dtype and o.shape is not None and len(o.shape) == len(spec.shape)
                              and len(stem) >= 3 for o in outputs)


def _constants(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Small constant tensors of the main graph and its subgraphs, by name (initializers and Constant nodes)."""
    import onnx
    from onnx import numpy_helper

    found: dict[str, np.ndarray] = {}
    for graph in _graphs(model.graph):
        for init in graph.initializer:
            if _small(init.dims) and init.data_location != onnx.TensorProto.EXTERNAL:  # weights stay where they are
                found[init.name] = numpy_helper.to_array(init)
        for node in graph.node:
            if node.op_type == "Constant":
                for attr in node.attribute:
                    if attr.name == "value" and _small(attr.t.dims):
                        found[node.output[0]] = numpy_helper.to_array(attr.t)
                    elif attr.name in ("value_int", "value_ints"):
                        found[node.output[0]] = np.array(attr.i if attr.name == "value_int" else list(attr.ints))
    return found


def _small(dims: Sequence[int]) -> bool:
    return int(np.prod(dims)) <= 8 if len(dims) else True


def _graphs(graph: onnx.GraphProto) -> Iterator[onnx.GraphProto]:
    yield graph
    for node in graph.node:
        for attr in node.attribute:
            if attr.g.node:
                yield from _graphs(attr.g)
            for sub in attr.graphs:
                yield from _graphs(sub)


def _compared_values(model: onnx.ModelProto, name: str,
                     constants: Mapping[str, np.ndarray]) -> tuple[float | str, ...]:
    """The constants the graph compares input `name` with (through casts and reshapes), most frequent first; for
    a string input, the categories an encoder of the graph was trained on."""
    aliases, frontier = {name}, [name]
    nodes = [node for graph in _graphs(model.graph) for node in graph.node]
    while frontier:
        current = frontier.pop()
        for node in nodes:
            if node.op_type in _PASS_THROUGH and node.input and node.input[0] == current:
                for out in node.output:
                    if out not in aliases:
                        aliases.add(out)
                        frontier.append(out)
    seen: Counter[float | str] = Counter()
    for node in nodes:
        attr = _CATEGORY_ATTRS.get(node.op_type)
        if attr and node.domain == "ai.onnx.ml" and aliases.intersection(node.input):
            strings = next((list(a.strings) for a in node.attribute if a.name == attr), [])
            return tuple(dict.fromkeys(s.decode(errors="replace") for s in strings))
        if node.op_type in _COMPARE_OPS and aliases.intersection(node.input):
            for other in node.input:
                if other not in aliases and other in constants:
                    for value in np.asarray(constants[other]).ravel()[:8]:
                        if np.isfinite(value):
                            seen[float(value)] += 1
    return tuple(value for value, _ in seen.most_common(8))


def suggested_sizes(model: onnx.ModelProto) -> tuple[int, ...]:
    """Dimension sizes the graph's own small integer constants suggest (Reshape targets, Slice ends, ...), most
    frequent first; exporters bake a traced sequence length or a stride in there."""
    counts: Counter[int] = Counter()
    for value in _constants(model).values():
        if np.asarray(value).dtype.kind in "iu":
            for item in np.asarray(value).ravel():
                if 2 <= int(item) <= 4096:
                    counts[int(item)] += 1
    return tuple(size for size, _ in counts.most_common(12))


# --- data for a signature ------------------------------------------------------------------------------------------

def concrete_shape(item: InputSignature, rows: int | None, size: int = 4) -> tuple[int, ...]:
    """A shape for `item`: its example shape (first axis replaced by `rows` when that axis is free), else its
    declared shape with free axes set to `rows` (first) or `size`."""
    if item.shape is None and item.example_shape is None:
        raise InputError(f"input {item.name!r} has an unknown rank, so no data can be made for it",
                         hint="give real inputs or the shape: --sample-data FILE.npz or --input NAME:SHAPE:DTYPE of "
                              "mlpack convert or mlpack export (mlpack bench takes what they write)")
    declared = item.shape if item.shape is not None else tuple(None for _ in item.example_shape or ())
    base = item.example_shape or tuple(d if isinstance(d, int) else size for d in declared)
    if rows is not None and declared and not isinstance(declared[0], int):
        return (rows, *base[1:])
    return tuple(base)


_WORDS = ("the", "rain", "goal", "oven", "model", "fast", "blue", "team", "salt", "storm", "score", "bake")


def make_array(item: InputSignature, shape: Sequence[int], rng: np.random.Generator) -> np.ndarray:
    """Values that suit the input: zeros for a state, one of the graph's compared values, standard normal floats,
    small non-negative integers (valid indices for embedding tables and class ids; ones for masks), booleans,
    short strings."""
    shape = tuple(shape)
    if item.dtype == "str":
        words = [str(v) for v in item.values if isinstance(v, str)]
        if words:  # the categories the model knows, in turn
            return np.array([words[i % len(words)] for i in range(int(np.prod(shape)))], dtype=str).reshape(shape)
        return np.array([" ".join(rng.choice(_WORDS, size=3)) for _ in range(int(np.prod(shape)))],
                        dtype=str).reshape(shape)
    dtype = np.dtype(item.dtype)
    if item.values and not isinstance(item.values[0], str):
        return np.full(shape, item.values[0], dtype=dtype)
    if item.state:
        return np.zeros(shape, dtype=dtype)
    if dtype.kind == "b":
        return rng.random(shape) < 0.5
    if dtype.kind in "iu":
        if "mask" in item.name.lower():
            return np.ones(shape, dtype=dtype)
        if any(word in item.name.lower() for word in ("token_type", "segment", "type_ids")):
            return np.zeros(shape, dtype=dtype)  # a BERT's segment ids index an embedding of two rows
        return rng.integers(0, 10, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def make_feed(signature: Signature, rows: int | None, seed: int = 0, size: int = 4) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {item.name: make_array(item, concrete_shape(item, rows, size), rng) for item in signature.inputs}


def free_axes(signature: Signature) -> dict[str, tuple[int, ...]]:
    """Per input, the axes that are free and not a batch axis (a sequence's length, an image's height and width):
    where one size that ran says nothing of the others."""
    return {name: tuple(i for i, axis in enumerate(axes) if axis == "S") for name, axes in _template(signature).items()
            if "S" in axes}


def _template(signature: Signature) -> dict[str, tuple[int | str, ...]]:
    """Per input, each axis as its fixed size, "B" (a batch axis: free at axis 0, the same symbol as one, or a free
    axis of a state) or "S" (any other free axis)."""
    batch = {item.shape[0] for item in signature.inputs if item.shape and isinstance(item.shape[0], str)}
    out: dict[str, tuple[int | str, ...]] = {}
    for item in signature.inputs:
        axes: list[int | str] = []
        for axis, dim in enumerate(item.shape or ()):
            if isinstance(dim, int):
                axes.append(dim)
            elif axis == 0 or dim in batch or (dim is None and item.state):
                axes.append("B")
            else:
                axes.append("S")
        out[item.name] = tuple(axes)
    return out


def _candidates(signature: Signature, sizes: Sequence[int]) -> Iterator[tuple[dict[str, tuple[int, ...]],
                                                                           dict[str, float | str]]]:
    """Shapes (and values for compared inputs) to try: batch axes 1 and each size for every other free axis at
    once; for inputs with several compared values, each value."""
    template = _template(signature)
    free = any("S" in axes for axes in template.values())
    value_sets = [[(item.name, v) for v in item.values] for item in signature.inputs
                  if len(item.values) > 1 and item.dtype != "str"]
    choices: list[dict[str, float | str]] = [{}]
    for options in value_sets:
        choices = [{**c, name: v} for c in choices for name, v in options]
    for size in (sizes if free else (1,)):
        for values in choices[:4]:
            yield ({name: tuple(1 if a == "B" else size if a == "S" else int(a) for a in axes)
                    for name, axes in template.items()}, values)


def probe(signature: Signature, run: Callable[[dict[str, np.ndarray]], object], sizes: Sequence[int] = (),
          tries: int = PROBE_TRIES, seconds: float = PROBE_SECONDS) -> tuple[Signature, str | None]:
    """Find example shapes (and values) with which `run` succeeds; returns the updated signature and, when none
    ran, the last error seen. Inputs that already have example shapes keep them."""
    if signature.runnable:
        return signature, None
    if any(item.shape is None for item in signature.inputs):
        return signature, "an input has an unknown rank"
    ordered = tuple(dict.fromkeys([*sizes, *COMMON_SIZES]))
    started, last = time.monotonic(), None
    rng = np.random.default_rng(0)
    for count, (shapes, values) in enumerate(_candidates(signature, ordered)):
        if count >= tries or time.monotonic() - started > seconds:
            break
        items = tuple(replace(item, values=(values[item.name], *[v for v in item.values if v != values[item.name]]))
                      if item.name in values else item for item in signature.inputs)
        feed = {item.name: make_array(item, shapes[item.name], rng) for item in items}
        try:
            run(feed)
        except Exception as err:  # noqa: BLE001 - onnxruntime's untyped errors: this candidate does not run
            last = error_text(err)[:300]
            continue
        return replace(signature, inputs=tuple(replace(item, example_shape=shapes[item.name]) for item in items),
                       examples_from="probe"), None
    return signature, last
