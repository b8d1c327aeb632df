"""The data that proves a model: the user's samples in a format that can express any model's feeds, or synthetic
data shaped by the model's Signature (the last resort, and labelled as such). Parity, calibration, the quantization
gate, warm-up and benchmarks all read this one value.

Accepted files (for `--sample-data`, `--calibration`, `--eval`):
- an `.npz` whose arrays are keyed by the model's input names (a single-input model also takes one of `x`, `X`,
  `inputs`, `input`, `x_test`, `data`, or its only array), optionally with labels (`y`, `labels`, `label`,
  `y_test`, `targets`). It is read, in this order, as
  1. samples stacked on a shared first axis (the common case: `input` (n, 8, 8, 1) for n images);
  2. one feed, every array with the input's full shape (scalars as 0-d arrays: a voice model's `sr`, a `state`
     whose batch axis is not the first);
  3. n feeds stacked on a new leading axis (`sr` (n,), `state` (n, 2, 1, 128)).
- a directory of `NAME.npy` files (one per input, stacked), or of `.npz` files as above, each read on its own
  (feeds of different shapes stay apart: a detector's images of several sizes).
Errors name the input, the shape the model expects and the shape given.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlpk.packager.errors import InputError, InternalError
from mlpk.packager.onnxrt import error_text
from mlpk.packager.signature import InputSignature, Signature, make_feed

LABEL_KEYS = ("y", "labels", "label", "y_test", "targets")
SINGLE_INPUT_KEYS = ("x", "X", "inputs", "input", "x_test", "data")
NPZ_HINT = "write it with numpy.savez(path, INPUT_NAME=array, labels=array): the sample axis first, or one feed"

Feed = dict[str, np.ndarray]
Output = "np.ndarray | list[np.ndarray]"  # an output over the runs: joined, or one array per run
Outputs = dict[str, "np.ndarray | list[np.ndarray]"]


@dataclass(frozen=True, slots=True)
class Feeds:
    """Model inputs in `parts` (each part one session.run feed; with `stacked`, its arrays hold several samples on
    their first axis), labels per sample, and where they came from (`synthetic` when mlpack made them)."""

    parts: tuple[Feed, ...]
    labels: np.ndarray | None
    source: str
    stacked: bool = True
    synthetic: bool = False

    def _rows(self, part: Feed) -> int:
        return len(next(iter(part.values()))) if self.stacked and part else 1

    def __len__(self) -> int:
        return sum(self._rows(part) for part in self.parts)

    @property
    def count(self) -> int:
        return len(self)

    @property
    def origin(self) -> str:
        return self.source

    @property
    def inputs(self) -> Feed:
        """All samples as one feed; only for data that has one part."""
        if len(self.parts) != 1:
            raise InternalError(f"{self.source} has {len(self.parts)} separate feeds; iterate batches() instead")
        return self.parts[0]

    def non_finite(self) -> dict[str, int]:
        """How many NaN and infinite values each float input holds, for the inputs that hold any."""
        counts: dict[str, int] = {}
        for part in self.parts:
            for name, array in part.items():
                if array.dtype.kind == "f":
                    bad = int(array.size - np.count_nonzero(np.isfinite(array)))
                    if bad:
                        counts[name] = counts.get(name, 0) + bad
        return counts

    def first(self) -> Feed:
        """One sample (the first), as a feed: what a warm-up runs."""
        return next(self.select(slice(0, 1)).batches(1))

    def select(self, rows: slice | Sequence[int] | np.ndarray, source: str | None = None) -> Feeds:
        """The samples at `rows` (indices over all parts, in order)."""
        wanted = list(range(len(self)))[rows] if isinstance(rows, slice) else [int(i) for i in np.asarray(rows)]
        owner: list[tuple[int, int]] = [(p, r) for p, part in enumerate(self.parts) for r in range(self._rows(part))]
        groups: dict[int, list[int]] = {}
        for index in wanted:
            part, row = owner[index]
            groups.setdefault(part, []).append(row)
        parts = tuple({k: v[rows_of] for k, v in self.parts[p].items()} if self.stacked else self.parts[p]
                      for p, rows_of in groups.items())
        labels = None if self.labels is None else self.labels[wanted]
        return Feeds(parts, labels, source or self.source, self.stacked, self.synthetic)

    def head(self, n: int) -> Feeds:
        return self.select(slice(0, n))

    def split(self, fraction: float) -> tuple[Feeds, Feeds]:
        """(calibration, held-out evaluation): the last `fraction` of the samples is held out (at least one)."""
        if len(self) < 2:
            raise InputError(f"{self.source} has {len(self)} sample; calibration and evaluation need at least 2",
                             hint="pass more samples, or separate evaluation data (mlpack quantize --eval)")
        held = min(len(self) - 1, max(1, round(len(self) * fraction)))
        cut = len(self) - held
        return (self.select(slice(0, cut), f"{self.source} [:{cut}]"),
                self.select(slice(cut, None), f"{self.source} [{cut}:] (held out)"))

    def batches(self, size: int) -> Iterator[Feed]:
        """Feeds of at most `size` samples (separate feeds one at a time)."""
        for part in self.parts:
            if not self.stacked:
                yield part
                continue
            rows = self._rows(part)
            for start in range(0, rows, max(1, size)):
                yield {k: v[start:start + size] for k, v in part.items()}

    def cast(self, signature: Signature) -> Feeds:
        """These feeds in `signature`'s dtypes (float64 samples kept for a float64 source, narrowed for the model)."""
        items = {item.name: item for item in signature.inputs}
        parts = tuple({name: _cast(array, items[name], self.source) if name in items else array
                       for name, array in part.items()} for part in self.parts)
        return Feeds(parts, self.labels, self.source, self.stacked, self.synthetic)

    def describe(self) -> str:
        """`17 samples from sample data x.npz` / `64 synthetic samples (seed 0)`, for reports and messages."""
        return f"{len(self)} sample{'s' if len(self) != 1 else ''} from {self.source}"


# --- reading files -------------------------------------------------------------------------------------------------

def load(path: Path, signature: Signature, wide: bool = False) -> Feeds:
    """Read `path` (an .npz or a directory; see the module docstring) as feeds for `signature`. `wide` keeps float64
    arrays as they are for a float32 input (for a source that computes in float64: Feeds.cast narrows them later)."""
    if not path.exists():
        raise InputError(f"data path {path} does not exist", hint="pass an .npz file or a directory of arrays")
    if path.is_file():
        return interpret(read_npz(path), signature, path.name, wide)  # the name only: reports travel inside models
    npy = sorted(path.glob("*.npy"))
    if npy:
        try:
            arrays = {file.stem: np.load(file, allow_pickle=False) for file in npy}
        except (OSError, ValueError) as err:
            raise InputError(f"cannot read the arrays in {path.name}: {err}", hint="save them with numpy.save") from err
        return interpret(arrays, signature, path.name, wide)
    files = sorted(path.glob("*.npz"))
    if not files:
        raise InputError(f"{path.name} holds no .npy or .npz files", hint="save one NAME.npy per model input, or "
                         "one .npz per feed")
    return combine([interpret(read_npz(f), signature, f"{path.name}/{f.name}", wide) for f in files], path.name)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    if not zipfile.is_zipfile(path):  # numpy would look for a .npy or a pickle and say so
        with path.open("rb") as handle:
            npy = handle.read(6) == b"\x93NUMPY"
        what = "a single .npy array" if npy else "not a zip archive"
        raise InputError(f"{path.name} is not a readable .npz archive ({what})", hint=NPZ_HINT)
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {key: archive[key] for key in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise InputError(f"{path.name} is not a readable .npz archive ({err})", hint=NPZ_HINT) from err


def combine(items: Sequence[Feeds], source: str) -> Feeds:
    """Several files' feeds as one: stacked ones concatenated where their shapes allow, else kept as parts."""
    if all(item.stacked for item in items):
        parts: list[Feed] = []
        for item in items:
            for part in item.parts:
                if parts and all(parts[-1][k].shape[1:] == v.shape[1:] and parts[-1][k].dtype == v.dtype
                                 for k, v in part.items()):
                    parts[-1] = {k: np.concatenate([parts[-1][k], v]) for k, v in part.items()}
                else:
                    parts.append(part)
        labels = [item.labels for item in items]
        joined = np.concatenate([lab for lab in labels if lab is not None]) if all(lab is not None for lab in labels) \
            else None
        return Feeds(tuple(parts), joined, source, True)
    singles = [part for item in items for part in (item.parts if not item.stacked else _unstack(item))]
    return Feeds(tuple(singles), None, source, False)


def _unstack(item: Feeds) -> list[Feed]:
    return [{k: v[i:i + 1] for k, v in part.items()} for part in item.parts for i in range(len(next(iter(
        part.values()))))]


def interpret(arrays: Mapping[str, np.ndarray], signature: Signature, source: str, wide: bool = False) -> Feeds:
    """Arrays keyed by input names (or aliases) as feeds for `signature`, in the order the module docstring gives
    (`wide`: as load's)."""
    arrays = dict(arrays)
    names = [item.name for item in signature.inputs]
    label_key = next((k for k in LABEL_KEYS if k in arrays and k not in names), None)
    labels = arrays.pop(label_key) if label_key else None
    if not arrays:
        raise InputError(f"{source} holds no input arrays (only labels or nothing)", hint=NPZ_HINT)
    if len(names) == 1 and names[0] not in arrays:
        alias = next((k for k in SINGLE_INPUT_KEYS if k in arrays), None)
        if alias is None and len(arrays) == 1:
            alias = next(iter(arrays))
        if alias is not None:
            arrays = {names[0]: arrays[alias]}
    missing = [n for n in names if n not in arrays]
    if missing:
        raise InputError(f"{source} has no array for the model input(s) {missing}; it has {sorted(arrays)}",
                         hint=f"name the arrays after the model inputs {names}")
    items = {item.name: item for item in signature.inputs}
    disagree = None
    if signature.stackable:
        stacked = {name: _stackable(arrays[name], items[name]) for name in names}
        if all(v is not None for v in stacked.values()):
            counts = {name: len(v) for name, v in stacked.items() if v is not None}
            if labels is not None:
                counts["labels"] = len(labels)
            if len(set(counts.values())) == 1:
                if not next(iter(counts.values())):
                    raise InputError(f"{source} holds no samples", hint="pass non-empty arrays")
                feed = {name: _cast(v, items[name], source, wide) for name, v in stacked.items() if v is not None}
                return Feeds((feed,), labels, source, True)
            disagree = counts
            if labels is not None and len({v for k, v in counts.items() if k != "labels"}) == 1:
                raise InputError(f"{source}: the arrays disagree on the number of samples: {counts}",
                                 hint="give one label per sample")
    if all(_fits(arrays[n], items[n]) for n in names):
        return Feeds(({n: _cast(arrays[n], items[n], source, wide) for n in names},), None, source, False)
    leading = {n: arrays[n].shape[0] if arrays[n].ndim else None for n in names}
    if len(set(leading.values())) == 1 and None not in leading.values() and all(
            _fits(arrays[n][0], items[n]) for n in names):
        count = next(iter(leading.values()))
        parts = tuple({n: _cast(arrays[n][i], items[n], source, wide) for n in names} for i in range(count or 0))
        return Feeds(parts, labels if labels is not None and len(labels) == count else None, source, False)
    if disagree is not None:
        raise InputError(f"{source}: the arrays disagree on the number of samples: {disagree}",
                         hint="every array needs the same first (sample) axis, or give one whole feed per file")
    bad = next((n for n in names if not _fits(arrays[n], items[n]) and _stackable(arrays[n], items[n]) is None),
               next(n for n in names if not _fits(arrays[n], items[n])))
    want = items[bad]
    raise InputError(f"{source}: array {bad!r} has shape {list(arrays[bad].shape)}, the model expects "
                     f"{want.spec.render()} (one feed), or that shape with the samples on a first axis",
                     hint=NPZ_HINT)


def _stackable(array: np.ndarray, item: InputSignature) -> np.ndarray | None:
    """`array` as samples of `item` stacked on the first axis (a trailing 1 added for a (n,) column of a (n, 1)
    input), or None when it is not."""
    if item.shape is None:
        return array if array.ndim >= 1 else None
    if array.ndim == len(item.shape) - 1 and item.shape and item.shape[-1] == 1 and array.ndim >= 1:
        array = array[..., None]
    if array.ndim != len(item.shape) or array.ndim == 0:
        return None
    fixed = all(not isinstance(want, int) or want == have for want, have in zip(item.shape[1:], array.shape[1:],
                                                                                 strict=True))
    return array if fixed else None


def _fits(array: np.ndarray, item: InputSignature) -> bool:
    """Whether `array` is one whole feed for `item` (its rank and every fixed dimension)."""
    if item.shape is None:
        return True
    return array.ndim == len(item.shape) and all(not isinstance(want, int) or want == have
                                                 for want, have in zip(item.shape, array.shape, strict=True))


def _cast(array: np.ndarray, item: InputSignature, source: str, wide: bool = False) -> np.ndarray:
    if item.dtype == "str":
        if array.dtype.kind not in "USO":
            raise InputError(f"{source}: array {item.name!r} is {array.dtype}, the model expects strings",
                             hint="pass the text column as a string array")
        return array.astype(object)
    want = np.dtype(item.dtype)
    if wide and array.dtype == np.float64 and want.kind == "f":
        return np.ascontiguousarray(array) if array.ndim else array
    if array.dtype.kind in "fiub" and want.kind in "fiub":
        return np.asarray(array, dtype=want, order="C")  # ascontiguousarray would make a 0-d scalar 1-d
    if array.dtype != want:
        raise InputError(f"{source}: array {item.name!r} is {array.dtype}, the model expects {want}",
                         hint="convert the data to the model's input dtype")
    return array


def run(session: Any, data: Feeds, batch: int, names: list[str] | None = None) -> Outputs:
    """All outputs (or `names`) of `session` on `data`, concatenated along the sample axis; an output whose runs
    differ in shape beyond that axis (feeds of different sizes) stays a list of the runs' arrays."""
    names = names or [o.name for o in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    try:
        for feed in data.batches(batch):
            for name, value in zip(names, session.run(names, feed), strict=True):
                parts[name].append(as_array(value))
    except Exception as err:  # onnxruntime's own error types
        raise InputError(f"the model does not run on {data.describe()}: {error_text(err)[:400]}",
                         hint="check the data's shapes and dtypes against the model's inputs") from err
    return {n: join(p) for n, p in parts.items()}


def as_array(value: Any) -> np.ndarray:
    """An output as an array; a sequence of maps (scikit-learn's ZipMap) as a (rows, classes) matrix."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        keys = list(value[0])  # onnxruntime keeps the ZipMap's class order
        return np.array([[row[k] for k in keys] for row in value], dtype=np.float32)
    return np.asarray(value)


def join(parts: list[np.ndarray]) -> np.ndarray | list[np.ndarray]:
    if len(parts) == 1:
        return parts[0]
    if all(p.ndim and p.shape[1:] == parts[0].shape[1:] for p in parts):
        return np.concatenate(parts)
    if all(p.shape == parts[0].shape for p in parts):
        return np.stack(parts)
    return parts


# --- synthetic data ------------------------------------------------------------------------------------------------

def synthesize(signature: Signature, count: int, seed: int = 0) -> Feeds:
    """`count` samples shaped by `signature` (its example shapes; see signature.make_array for the values): stacked
    when the model has a free batch axis, else `count` separate feeds. Labelled synthetic."""
    source = f"{count} synthetic samples (seed {seed}, shapes from {signature.examples_from})"
    if signature.stackable and signature.fixed_batch is None:
        return Feeds((make_feed(signature, count, seed),), None, source, True, synthetic=True)
    parts = tuple(make_feed(signature, None, seed + i) for i in range(count))
    return Feeds(parts, None, source, signature.fixed_batch is not None, synthetic=True)
