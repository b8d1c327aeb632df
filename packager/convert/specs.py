"""Input/output specs: parsing `--input NAME:SHAPE:DTYPE` and reading them off ONNX graphs."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np

from mlpk.packager.card import Dim, TensorSpec, graph_inputs, graph_outputs
from mlpk.packager.errors import ConfigError

if TYPE_CHECKING:
    import onnx

__all__ = ["from_arrays", "graph_inputs", "graph_outputs", "name_batch_axis", "parse_input", "parse_model_args"]

_INPUT_HINT = "e.g. --input image:batch,8,8,1:float32 (SHAPE: comma-separated ints or names; DTYPE a numpy name or str)"


def parse_input(text: str) -> TensorSpec:
    """`image:batch,8,8,1:float32` -> TensorSpec; a dimension that is not an integer is symbolic (`?` = unnamed)."""
    parts = text.split(":")
    if len(parts) != 3 or not parts[0]:
        raise ConfigError(f"--input {text!r} is not NAME:SHAPE:DTYPE", hint=_INPUT_HINT)
    name, shape_text, dtype = parts
    dims: list[Dim] = []
    items = [d.strip() for d in shape_text.split(",")] if shape_text.strip() else []  # no SHAPE: a scalar
    if "" in items:
        raise ConfigError(f"--input {text!r}: dimension {items.index('') + 1} of {shape_text!r} is empty",
                          hint=_INPUT_HINT)
    for item in items:
        if item.lstrip("-").isdigit():
            if int(item) < 0:
                raise ConfigError(f"--input {text!r}: dimension {item} is negative", hint=_INPUT_HINT)
            dims.append(int(item))
        else:
            dims.append(None if item in ("?", "None", "-") else item)
    if dtype in ("str", "string", "object"):
        dtype = "str"
    else:
        try:
            dtype = np.dtype(dtype).name
        except TypeError as err:
            raise ConfigError(f"--input {text!r}: {dtype!r} is not a numpy dtype", hint=_INPUT_HINT) from err
    return TensorSpec(name, dtype, tuple(dims))


def from_arrays(arrays: dict[str, np.ndarray]) -> tuple[TensorSpec, ...]:
    """Specs for sample arrays, the first axis made the symbolic `batch`."""
    return tuple(TensorSpec(name, "str" if a.dtype.kind in "USO" else a.dtype.name, ("batch", *a.shape[1:]))
                 for name, a in arrays.items())


def _opaque(symbol: str) -> bool:
    """Symbols exporters invent: torch's `s40` / `u3`, tf2onnx's `unk__21`."""
    return (not symbol or symbol.startswith("unk__")
            or (symbol[:1] in ("s", "u") and symbol[1:].isdigit()))


def name_batch_axis(model: onnx.ModelProto) -> None:
    """Call the first axis of every input/output `batch` where an exporter left an opaque symbol (`s40`,
    `unk__21`) or none; mutates `model`. Only dims that are already symbolic change, so fixed shapes stay fixed."""
    for value in [*model.graph.input, *model.graph.output]:
        tensor = value.type.tensor_type
        if value.type.WhichOneof("value") == "tensor_type" and tensor.HasField("shape") and tensor.shape.dim:
            first = tensor.shape.dim[0]
            if not first.HasField("dim_value") and _opaque(first.dim_param):
                first.dim_param = "batch"


def parse_model_args(text: str) -> dict[str, object]:
    """--model-args: a JSON object of keyword arguments."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ConfigError(f"--model-args {text!r} is not JSON ({err.msg})",
                          hint='e.g. --model-args \'{"width": 16}\'') from err
    if not isinstance(value, dict):
        raise ConfigError(f"--model-args {text!r} is not a JSON object", hint='e.g. --model-args \'{"width": 16}\'')
    return value


def _declared(value: onnx.ValueInfoProto) -> list[int | str] | None:
    tensor = value.type.tensor_type
    if value.type.WhichOneof("value") != "tensor_type" or not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else d.dim_param for d in tensor.shape.dim]


def _agrees(declared: list[int | str], observed: tuple[int, ...], bound: Mapping[str, int]) -> bool:
    """Whether a declared shape holds for a returned one: each fixed size equal, each size named after an input's
    (`batch`) equal to that input's size in the run (`bound`), other names free."""
    return len(declared) == len(observed) and all(
        d == o if isinstance(d, int) else d not in bound or bound[d] == o
        for d, o in zip(declared, observed, strict=True))


def bound_sizes(model: onnx.ModelProto, feed: Mapping[str, np.ndarray]) -> dict[str, int]:
    """The size each named input axis (`batch`, `seq`) had in `feed`."""
    bound: dict[str, int] = {}
    for value in model.graph.input:
        dims = _declared(value)
        if dims is None or value.name not in feed or len(dims) != np.ndim(feed[value.name]):
            continue
        for dim, size in zip(dims, np.shape(feed[value.name]), strict=True):
            if isinstance(dim, str) and dim:
                bound.setdefault(dim, int(size))
    return bound


def _set_shape(value: onnx.ValueInfoProto, dims: list[int | str]) -> None:
    shape = value.type.tensor_type.shape
    shape.ClearField("dim")
    for dim in dims:
        added = shape.dim.add()
        if isinstance(dim, int):
            added.dim_value = dim
        else:
            added.dim_param = dim


_SYMBOL = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")


def true_output_shapes(model: onnx.ModelProto, observed: dict[str, tuple[int, ...]],
                       bound: Mapping[str, int]) -> str | None:
    """Make the outputs' declared shapes true to what a run returned (`observed`, by output name): an exporter may
    declare the size it traced for an axis that varies (torch: [batch, 4, 4] for [batch, seq, 4]) or a wrong rank
    (a third-party file). Such outputs get the shapes onnxruntime's symbolic shape inference derives from the
    inputs' when they agree with the run, else the run's rank with a free size where the declaration was wrong.
    A size named after an input's axis must be that axis's size in the run (`bound`, bound_sizes).
    Mutates `model`; the note says what changed (None when every declaration held)."""
    wrong = {value.name: declared for value in model.graph.output
             if value.name in observed and (declared := _declared(value)) is not None
             and not _agrees(declared, observed[value.name], bound)}
    if not wrong:
        return None
    inferred: dict[str, list[int | str]] = {}
    try:
        import onnx as onnx_module
        from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

        probe = onnx_module.ModelProto()
        probe.CopyFrom(model)
        for value in probe.graph.output:
            if value.name in wrong:
                value.type.tensor_type.ClearField("shape")
        solved = SymbolicShapeInference.infer_shapes(probe, auto_merge=True)
        inferred = {value.name: [d if isinstance(d, int) or _SYMBOL.fullmatch(d) else f"{value.name}_{i}"
                                 for i, d in enumerate(dims)]  # an expression of sizes is named, not shown
                    for value in solved.graph.output if value.name in wrong and (dims := _declared(value)) is not None}
    except Exception:  # noqa: BLE001 - ops it does not know, external data: the run's own shapes below
        inferred = {}
    changes = []
    for value in model.graph.output:
        if value.name not in wrong:
            continue
        seen = observed[value.name]
        dims = inferred.get(value.name)
        if dims is None or not _agrees(dims, seen, bound) or "" in dims:
            before = wrong[value.name]
            if len(before) == len(seen):  # a wrong size made free; the declaration's other sizes and names kept
                dims = [d if _agrees([d], (o,), bound) and d != "" else f"{value.name}_{i}"
                        for i, (d, o) in enumerate(zip(before, seen, strict=True))]
            else:
                dims = [f"{value.name}_{i}" for i in range(len(seen))]
        _set_shape(value, dims)
        changes.append(f"'{value.name}' declared {_render(wrong[value.name])}, returned {list(seen)}: now "
                       f"{_render(dims)}")
    return "output shapes made true to a run: " + "; ".join(changes)


def _render(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(d) if d != "" else "?" for d in dims) + "]"
