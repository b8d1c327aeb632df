"""Inputs for parity checks, accuracy gates and benchmarks: the user's .npz, or arrays generated from input specs.

An .npz holds one array per model input, keyed by the input's name, and optionally `labels` (the samples write
their held-out split this way). Generated inputs are deterministic: normal floats, small non-negative integers
(valid for class indices and most embedding tables), booleans, and short strings drawn from a fixed word list.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlpk.packager.card import Dim, TensorSpec
from mlpk.packager.errors import InputError

LABELS = "labels"
GENERATED_BATCH = 8
_WORDS = ("the", "rain", "goal", "oven", "model", "fast", "blue", "team", "salt", "storm", "score", "bake")


@dataclass(frozen=True, slots=True)
class SampleData:
    """Named input arrays (all with the same first dimension), optional labels, and where they came from."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    origin: str

    @property
    def count(self) -> int:
        return len(next(iter(self.inputs.values()))) if self.inputs else 0

    def head(self, n: int) -> SampleData:
        """The first `n` samples."""
        labels = None if self.labels is None else self.labels[:n]
        return SampleData({k: v[:n] for k, v in self.inputs.items()}, labels, self.origin)


def load_npz(path: Path) -> SampleData:
    """Read an .npz of inputs (and `labels`); errors name the file."""
    if not path.is_file():
        raise InputError(f"sample data {path} does not exist", hint="pass an .npz written with numpy.savez")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(f"sample data {path.name} is not a readable .npz ({err})",
                         hint="write it with numpy.savez(path, input_name=array, labels=array)") from err
    labels = arrays.pop(LABELS, None)
    if not arrays:
        raise InputError(f"sample data {path.name} holds no input arrays (only {LABELS!r} or nothing)")
    counts = {key: len(value) for key, value in arrays.items()}
    if len(set(counts.values())) != 1:
        raise InputError(f"sample data {path.name}: arrays have different sample counts {counts}")
    return SampleData(arrays, labels, f"sample data {path.name}")


def bind(data: SampleData, specs: Sequence[TensorSpec]) -> SampleData:
    """Key `data` by the model's input names and cast to their dtypes. A single array feeds a single-input model
    whatever its key; otherwise every input name must be present."""
    names = [spec.name for spec in specs]
    arrays = dict(data.inputs)
    if len(specs) == 1 and len(arrays) == 1 and names[0] not in arrays:
        arrays = {names[0]: next(iter(arrays.values()))}
    missing = [name for name in names if name not in arrays]
    if missing:
        raise InputError(f"{data.origin} lacks arrays for the model inputs {missing} (it has {sorted(arrays)})",
                         hint="key the .npz arrays by the model's input names")
    bound = {}
    for spec in specs:
        array = arrays[spec.name]
        if spec.shape is not None and len(spec.shape) != array.ndim:
            if len(spec.shape) == array.ndim + 1 and spec.shape[-1] == 1:
                array = array[..., None]  # e.g. strings (n,) for a text model's (n, 1) input
            else:
                raise InputError(f"{data.origin}: array {spec.name!r} has shape {array.shape}, the model input "
                                 f"expects rank {len(spec.shape)} {list(spec.shape)}")
        bound[spec.name] = array.astype(str) if spec.dtype == "str" else array.astype(spec.dtype)
    return SampleData(bound, data.labels, data.origin)


def _concrete(shape: Sequence[Dim] | None, batch: int, name: str) -> tuple[int, ...]:
    if shape is None:
        raise InputError(f"input {name!r} has an unknown rank, so no sample can be generated for it",
                         hint="pass --input NAME:SHAPE:DTYPE or --sample-data FILE.npz")
    # The first symbolic/unknown dimension is the batch; later ones (sequence lengths...) get a small fixed size.
    return tuple(d if isinstance(d, int) else (batch if i == 0 else 4) for i, d in enumerate(shape))


def generate(specs: Sequence[TensorSpec], *, batch: int = GENERATED_BATCH, seed: int = 0) -> SampleData:
    """Deterministic inputs for `specs` (see the module docstring for the value ranges)."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {}
    for spec in specs:
        shape = _concrete(spec.shape, batch, spec.name)
        if spec.dtype == "str":
            arrays[spec.name] = np.array([" ".join(rng.choice(_WORDS, size=3)) for _ in range(int(np.prod(shape)))],
                                         dtype=str).reshape(shape)
        elif spec.dtype == "bool":
            arrays[spec.name] = rng.random(shape) < 0.5
        elif np.dtype(spec.dtype).kind in "iu":
            arrays[spec.name] = rng.integers(0, 10, size=shape).astype(spec.dtype)
        else:
            arrays[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
    return SampleData(arrays, None, "generated inputs")
