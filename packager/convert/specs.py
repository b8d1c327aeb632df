"""Input/output specs: parsing `--input NAME:SHAPE:DTYPE` and reading them off ONNX graphs."""

from __future__ import annotations

import json
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
