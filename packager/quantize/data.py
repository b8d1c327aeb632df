"""Calibration and evaluation data: arrays keyed by the model's input names, with optional labels.

Accepted sources, in the order they are looked for:
- an `.npz` file whose keys are the model's input names (any single-input model also accepts one of `x`, `X`,
  `inputs`, `input`, `x_test`, `data`, or its only non-label array), and optionally labels under `y`, `labels`,
  `label`, `y_test` or `targets`;
- a directory of `NAME.npy` files (one per input, plus an optional label file) or of `.npz` files as above, which
  are concatenated along the sample axis;
- the model's sample data: `STEM-data.npz`, `STEM.npz` or `sample-data.npz` beside the model, else the only `.npz`
  file beside it (the samples/ scripts write their held-out data next to the models they train).
Every array has the sample axis first; it is checked against the model's input shapes and cast to its dtypes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mlpk.packager.errors import InputError

LABEL_KEYS = ("y", "labels", "label", "y_test", "targets")
SINGLE_INPUT_KEYS = ("x", "X", "inputs", "input", "x_test", "data")


@dataclass(frozen=True, slots=True)
class InputSpec:
    """One model input: its name, numpy dtype and shape (ints, or None / a name for a free dimension)."""

    name: str
    dtype: np.dtype
    shape: tuple[int | str | None, ...]


@dataclass(frozen=True, slots=True)
class Dataset:
    """Samples for the model's inputs (sample axis first), optional labels, and where they came from."""

    inputs: dict[str, np.ndarray]
    labels: np.ndarray | None
    source: str

    def __len__(self) -> int:
        return len(next(iter(self.inputs.values())))

    def select(self, rows: slice | np.ndarray, source: str | None = None) -> Dataset:
        labels = None if self.labels is None else self.labels[rows]
        return Dataset({k: v[rows] for k, v in self.inputs.items()}, labels, source or self.source)

    def split(self, fraction: float) -> tuple[Dataset, Dataset]:
        """(calibration, held-out evaluation): the last `fraction` of the samples is held out (at least one)."""
        if len(self) < 2:
            raise InputError(f"{self.source} has {len(self)} sample; calibration and evaluation need at least 2",
                             hint="pass more samples, or --eval with separate evaluation data")
        held = min(len(self) - 1, max(1, round(len(self) * fraction)))
        cut = len(self) - held
        return (self.select(slice(0, cut), f"{self.source} [:{cut}]"),
                self.select(slice(cut, None), f"{self.source} [{cut}:] (held out)"))

    def batches(self, size: int) -> Iterator[dict[str, np.ndarray]]:
        for start in range(0, len(self), size):
            yield {k: v[start:start + size] for k, v in self.inputs.items()}


def input_specs(model_path: Path) -> list[InputSpec]:
    """The model's graph inputs that are not initializers, as InputSpecs."""
    import onnx
    from onnx import helper

    model = onnx.load(str(model_path), load_external_data=False)
    initializers = {t.name for t in model.graph.initializer}
    specs = []
    for value in model.graph.input:
        if value.name in initializers:
            continue
        tensor = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        specs.append(InputSpec(value.name, np.dtype(helper.tensor_dtype_to_np_dtype(tensor.elem_type)), dims))
    return specs


def load(path: Path, specs: list[InputSpec]) -> Dataset:
    """Read an .npz file or a directory of arrays for the inputs in `specs` (see the module docstring)."""
    if not path.exists():
        raise InputError(f"data path {path} does not exist", hint="pass an .npz file or a directory of .npy files")
    if path.is_dir():
        arrays = _read_directory(path)
    else:
        arrays = _read_npz(path)
    return _match(arrays, specs, path.name)  # the name only: reports travel inside models, paths must not


def sample_data(model_path: Path) -> Path | None:
    """The sample data file beside the model, if there is one."""
    for name in (f"{model_path.stem}-data.npz", f"{model_path.stem}.npz", "sample-data.npz"):
        candidate = model_path.with_name(name)
        if candidate.is_file():
            return candidate
    others = sorted(model_path.parent.glob("*.npz"))
    return others[0] if len(others) == 1 else None


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError) as err:
        raise InputError(f"cannot read {path} as an .npz archive: {err}",
                         hint="write it with numpy.savez(path, INPUT_NAME=array, y=labels)") from err


def _read_directory(path: Path) -> dict[str, np.ndarray]:
    npy = sorted(path.glob("*.npy"))
    npz = sorted(path.glob("*.npz"))
    if npy:
        try:
            return {file.stem: np.load(file, allow_pickle=False) for file in npy}
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read the arrays in {path}: {err}", hint="save them with numpy.save") from err
    if not npz:
        raise InputError(f"{path} holds no .npy or .npz files", hint="save one NAME.npy per model input")
    parts = [_read_npz(file) for file in npz]
    keys = set(parts[0])
    for file, part in zip(npz, parts, strict=True):
        if set(part) != keys:
            raise InputError(f"{file} has arrays {sorted(part)}, but {npz[0].name} has {sorted(keys)}",
                             hint="give every .npz file in the directory the same keys")
    return {key: np.concatenate([part[key] for part in parts]) for key in keys}


def _match(arrays: dict[str, np.ndarray], specs: list[InputSpec], source: str) -> Dataset:
    label_key = next((k for k in LABEL_KEYS if k in arrays and k not in {s.name for s in specs}), None)
    labels = arrays.pop(label_key) if label_key else None
    names = [s.name for s in specs]
    if len(specs) == 1 and names[0] not in arrays:
        alias = next((k for k in SINGLE_INPUT_KEYS if k in arrays), None)
        if alias is None and len(arrays) == 1:
            alias = next(iter(arrays))
        if alias is not None:
            arrays = {names[0]: arrays[alias]}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError(f"{source} has no array for model input(s) {missing}; it has {sorted(arrays)}",
                         hint=f"name the arrays after the model inputs {names}")
    inputs = {spec.name: _conform(arrays[spec.name], spec, source) for spec in specs}
    counts = {name: len(array) for name, array in inputs.items()}
    if labels is not None:
        counts["labels"] = len(labels)
    if len(set(counts.values())) != 1:
        raise InputError(f"{source}: the arrays disagree on the number of samples: {counts}",
                         hint="every array needs the same first (sample) dimension")
    if next(iter(counts.values())) == 0:
        raise InputError(f"{source} holds no samples", hint="pass non-empty arrays")
    return Dataset(inputs, labels, source)


def _conform(array: np.ndarray, spec: InputSpec, source: str) -> np.ndarray:
    """`array` checked against `spec` (rank; fixed dimensions after the sample axis) and cast to its dtype."""
    if array.ndim != len(spec.shape):
        raise InputError(f"{source}: array '{spec.name}' has shape {list(array.shape)}, the model expects rank "
                         f"{len(spec.shape)} {list(spec.shape)}", hint="the first axis counts samples")
    for axis, (have, want) in enumerate(zip(array.shape[1:], spec.shape[1:], strict=True), start=1):
        if isinstance(want, int) and want > 0 and have != want:
            raise InputError(f"{source}: array '{spec.name}' has {have} on axis {axis}, the model expects {want} "
                             f"(shape {list(spec.shape)})", hint="reshape the data to the model's input shape")
    if array.dtype.kind in "fiub" and spec.dtype.kind in "fiub":
        return np.ascontiguousarray(array.astype(spec.dtype, copy=False))
    if spec.dtype == object and array.dtype.kind in "USO":  # string tensors: onnxruntime takes str objects
        return array.astype(object)
    if array.dtype != spec.dtype:
        raise InputError(f"{source}: array '{spec.name}' is {array.dtype}, the model expects {spec.dtype}",
                         hint="convert the data to the model's input dtype")
    return array


def synthetic(specs: list[InputSpec], count: int, seed: int = 0) -> Dataset:
    """Random samples for models without data (fp16 and dynamic INT8 only: their gate then compares outputs on
    inputs that exercise the graph, but cannot measure task accuracy). Free non-sample dimensions become 1."""
    rng = np.random.default_rng(seed)
    inputs = {}
    for spec in specs:
        shape = (count, *(d if isinstance(d, int) and d > 0 else 1 for d in spec.shape[1:]))
        if spec.dtype.kind == "f":
            inputs[spec.name] = rng.standard_normal(shape).astype(spec.dtype)
        elif spec.dtype.kind in "iu":
            inputs[spec.name] = rng.integers(0, 2, shape).astype(spec.dtype)
        elif spec.dtype.kind == "b":
            inputs[spec.name] = rng.integers(0, 2, shape).astype(bool)
        else:
            raise InputError(f"cannot make synthetic data for input '{spec.name}' of dtype {spec.dtype}",
                             hint="pass --calibration DATA")
    return Dataset(inputs, None, f"{count} synthetic samples (seed {seed})")
