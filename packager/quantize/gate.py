"""The accuracy gate: how far a quantized model's outputs are from the FP32 model's on the same evaluation data.

The gated figure depends on what an output is (`output_kind`), since one metric means nothing for another kind:
- labels (integer, string, boolean outputs): exact agreement;
- class scores (a classifier head: probability rows, or named like scores/logits, or with class labels given):
  argmax agreement, and with labels the accuracy before and after (labels count only when they are class ids:
  regression targets are not);
- values (embeddings, regressions, detections, masks, states): the worst row's cosine similarity and relative L2
  error, a drop of max(1 - cosine, error^2 / 2) (the two agree when the norms do; the second also sees a change of
  scale). A speaker embedding at cosine 0.7 fails here, whatever its argmax does. A 2-D output of up to
  _MAX_COLUMNS columns is also judged per column, its RMS error against the column's own RMS (error^2 / 2 again),
  so the small outputs of a multi-output regression count beside a large one;
- ambiguous 2-D float outputs that could be either: both, the worse counts.
The worst output counts. A non-finite output is an infinite drop: a silent NaN model never passes. `samples` and
the data's origin travel with the figures, so thin or synthetic evidence is visible wherever they are shown.
"""

from __future__ import annotations

import math
import re
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlpk.packager import feeds, onnxrt
from mlpk.packager.errors import QuantizationError
from mlpk.packager.feeds import Feeds, Outputs
from mlpk.packager.signature import Signature

# These errors may reach the user from either command that quantizes, so the hint names both commands' flags.
_OTHER_MODE = "try another mode (mlpack quantize --mode, mlpack export --quantize)"

@dataclass(frozen=True, slots=True)
class Agreement:
    """How closely a candidate model follows the reference on `samples` evaluation samples."""

    samples: int
    max_abs_error: float
    cosine: float  # mean per-sample cosine over the float outputs
    argmax_agreement: float | None
    accuracy_before: float | None
    accuracy_after: float | None
    drop: float
    drop_kind: str  # accuracy | argmax | agreement | cosine | relative error | non-finite output
    outputs: tuple[OutputFigures, ...] = ()

    def passes(self, max_drop: float) -> bool:
        return bool(math.isfinite(self.drop) and self.drop <= max_drop)

    def to_dict(self) -> dict[str, Any]:
        data = {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in asdict(self).items()
                if k != "outputs"}
        return {**data, "outputs": [f.to_dict() for f in self.outputs]}

    def summary(self) -> str:
        parts = [f"max error {self.max_abs_error:.3g}"]
        parts.extend(f.summary() for f in self.outputs)
        if self.accuracy_after is not None and self.accuracy_before is not None:
            parts.append(f"accuracy {self.accuracy_before:.2%} -> {self.accuracy_after:.2%}")
        return ", ".join(parts)


def open_session(path: Path, threads: int | None = None, cpu_layout: bool = True, fake_quant: bool = False) -> Any:
    """An onnxruntime CPU session for `path` with all graph optimizations (without the CPU-only layout ones when
    `cpu_layout` is False); a model that does not load is a QuantizationError.

    `fake_quant` runs a QDQ model unfused: every DequantizeLinear gives exact int8 x scale values and the float
    kernels accumulate them without rounding, which is what TensorRT computes (int8 products, int32 accumulation).
    Fused, onnxruntime's x86 QLinearConv/MatMul kernels without VNNI multiply pairs through VPMADDUBSW, whose
    16-bit saturation (ONNX Runtime quantization guide, "Data type selection") would fail a TensorRT-bound model
    for an error TensorRT never makes."""
    import onnxruntime as ort

    options = onnxrt.session_options()
    if fake_quant:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    elif not cpu_layout:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own untyped errors (Fail, InvalidGraph, ...)
        reason = str(err).splitlines()[0].replace(str(path), path.name)  # the candidate lives in a temporary dir
        raise QuantizationError(f"onnxruntime cannot load {path.name}: {reason}",
                                hint=f"{_OTHER_MODE}, or report the model to mlpack") from err


def check_loads(path: Path, timeout: float = 300.0, cpu_layout: bool = True) -> None:
    """Load `path` in a child process with onnxruntime's default (full) graph optimizations, as a CPU server would
    (without the CPU-only layout optimizations when `cpu_layout` is False: a GPU target never runs them).

    Some graphs crash onnxruntime itself rather than raising (onnxruntime 1.31's NchwcTransformer segfaults on
    some FP16 transformer graphs): the crash must fail this candidate, not the mlpack process.
    """
    level = "ORT_ENABLE_ALL" if cpu_layout else "ORT_ENABLE_EXTENDED"
    code = ("import sys, onnxruntime as ort; o = ort.SessionOptions(); o.log_severity_level = 3; "
            f"o.graph_optimization_level = ort.GraphOptimizationLevel.{level}; "
            "ort.InferenceSession(sys.argv[1], o, providers=['CPUExecutionProvider'])")
    try:
        done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                              timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise QuantizationError(f"onnxruntime took over {timeout:.0f} s to load {path.name}",
                                hint=f"the candidate is not usable; {_OTHER_MODE}") from err
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise QuantizationError(f"onnxruntime crashed ({name}) loading the candidate with its default graph "
                                "optimizations; a server would crash the same way",
                                hint=f"{_OTHER_MODE}, or keep the ops named in the report in float")
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1].replace(str(path), path.name) if lines else done.returncode
        raise QuantizationError(f"onnxruntime cannot load {path.name}: {reason}",
                                hint=_OTHER_MODE)


def batch_size(sig: Signature) -> int:
    """The evaluation batch: the fixed batch dimension if the model has one, else 64."""
    return sig.fixed_batch or 64


def run(session: Any, data: Feeds, batch: int, names: list[str] | None = None) -> Outputs:
    """All outputs (or `names`) of `session` on `data` (see feeds.run)."""
    return feeds.run(session, data, batch, names)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-sample cosine similarity of float outputs (1.0 where both samples are all zeros)."""
    a = a.reshape(len(a), -1).astype(np.float64) if a.ndim else a.reshape(1, 1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64) if b.ndim else b.reshape(1, 1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    both_zero = (norms == 0) & (np.abs(a).sum(axis=1) == 0) & (np.abs(b).sum(axis=1) == 0)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1), np.where(both_zero, 1.0, 0.0))
    return float(cos.mean())


# --- output kinds --------------------------------------------------------------------------------------------------

_SCORE_NAME = re.compile(r"(prob|logit|score|class|softmax|label|pred)", re.IGNORECASE)
_VALUE_NAME = re.compile(r"(embed|feat|vec|hidden|enc|state|box|mask|coord|emb|pool|repr|latent)", re.IGNORECASE)
_TINY_ROW = 1e-3  # rows whose reference norm is below this share of the median row norm carry no direction
# Up to this many columns, a 2-D value output is also judged column by column: the outputs of a multi-output
# regression have scales of their own, and a row's error is the error of its largest column. Wider outputs
# (embeddings, features) are directions, judged by row.
_MAX_COLUMNS = 64


@dataclass(frozen=True, slots=True)
class OutputFigures:
    """One output's gated figures: `kind` decides which metric is gated (see the module docstring)."""

    name: str
    kind: str  # labels | scores | ambiguous | values
    agreement: float | None  # labels: exact; scores: argmax
    min_cosine: float | None  # the worst row's cosine (values, ambiguous)
    max_rel_error: float | None  # the worst row's relative L2 error (values, ambiguous)
    drop: float
    metric: str
    max_column_error: float | None = None  # the worst column's relative RMS error (a few value columns)

    def to_dict(self) -> dict[str, Any]:
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in asdict(self).items()}

    def summary(self) -> str:
        parts = []
        if self.agreement is not None:
            parts.append(f"{'argmax ' if self.kind != 'labels' else ''}agreement {self.agreement:.2%}")
        if self.min_cosine is not None:
            parts.append(f"worst-row cosine {self.min_cosine:.4f}")
        if self.max_rel_error is not None:
            parts.append(f"worst-row relative error {self.max_rel_error:.3g}")
        if self.max_column_error is not None:
            parts.append(f"worst-column relative error {self.max_column_error:.3g}")
        return f"{self.name} ({self.kind}): " + ", ".join(parts)


def output_kind(name: str, ref: np.ndarray, labelled: bool = False) -> str:
    """labels (integers, strings, booleans: exact agreement), scores (a classifier head: argmax agreement), values
    (embeddings, regressions, detections, masks, states: per-row cosine and relative error), or ambiguous (a 2-D
    float output that may be either: both are gated)."""
    if ref.dtype.kind not in "fc":
        return "labels"
    if ref.ndim != 2 or ref.shape[-1] < 2 or _VALUE_NAME.search(name):
        return "values"
    rows = ref.astype(np.float64)
    probabilities = bool(rows.size) and rows.min() >= 0 and rows.max() <= 1 and bool(
        np.allclose(rows.sum(axis=-1), 1.0, atol=1e-3))
    if probabilities or labelled or _SCORE_NAME.search(name):
        return "scores"
    return "ambiguous"


def _rows(value: np.ndarray | list[np.ndarray]) -> list[np.ndarray]:
    """Per-sample vectors: axis-0 rows of each run (a run's whole output when rows hold one number each)."""
    runs = value if isinstance(value, list) else [value]
    out: list[np.ndarray] = []
    for run_value in runs:
        array = np.asarray(run_value, dtype=np.float64)
        if array.ndim == 0 or array.size == len(array):
            out.append(array.reshape(-1))  # one number per row: the column is the vector (regressions, scores)
        else:
            out.extend(array.reshape(len(array), -1))
    return out


def _value_figures(ref: np.ndarray | list[np.ndarray], got: np.ndarray | list[np.ndarray]) -> tuple[float, float]:
    """(worst-row cosine, worst-row relative L2 error) of `got` against `ref`; rows with almost no reference
    magnitude are left out (their direction is noise), unless every row is such."""
    ref_rows, got_rows = _rows(ref), _rows(got)
    if len(ref_rows) != len(got_rows) or any(a.shape != b.shape for a, b in zip(ref_rows, got_rows, strict=True)):
        return -1.0, math.inf
    norms = np.array([np.linalg.norm(r) for r in ref_rows])
    if not len(norms):
        return 1.0, 0.0
    keep = norms > _TINY_ROW * float(np.median(norms)) if float(np.median(norms)) > 0 else norms >= 0
    worst_cos, worst_rel = 1.0, 0.0
    for a, b, norm, kept in zip(ref_rows, got_rows, norms, keep, strict=True):
        diff = float(np.linalg.norm(a - b))
        if not kept:
            continue
        other = float(np.linalg.norm(b))
        cos = float(np.dot(a, b) / (norm * other)) if norm > 0 and other > 0 else (1.0 if diff == 0 else 0.0)
        worst_cos = min(worst_cos, cos)
        worst_rel = max(worst_rel, diff / norm if norm > 0 else (0.0 if diff == 0 else math.inf))
    return worst_cos, worst_rel


def _column_error(ref: np.ndarray | list[np.ndarray], got: np.ndarray | list[np.ndarray]) -> float | None:
    """The worst column's RMS error relative to the column's own RMS over the samples, for a 2-D output of 2 to
    _MAX_COLUMNS columns (None otherwise); a column the reference holds at zero counts its error as infinite."""
    if isinstance(ref, list) or isinstance(got, list):
        return None
    a, b = np.asarray(ref, np.float64), np.asarray(got, np.float64)
    if a.ndim != 2 or a.shape != b.shape or not 2 <= a.shape[1] <= _MAX_COLUMNS or not len(a):
        return None
    scale = np.sqrt(np.mean(a * a, axis=0))
    error = np.sqrt(np.mean((a - b) ** 2, axis=0))
    ratios = np.where(scale > 0, error / np.where(scale > 0, scale, 1.0), np.where(error > 0, np.inf, 0.0))
    return float(ratios.max())


def _class_labels(labels: np.ndarray | None) -> np.ndarray | None:
    """`labels` when they are class ids (one non-negative whole number per sample), else None: the targets of a
    regression (floats, or several per sample) say nothing of a classifier's accuracy."""
    if labels is None:
        return None
    flat = np.asarray(labels)
    if flat.ndim > 1 and int(np.prod(flat.shape[1:])) == 1:
        flat = flat.reshape(len(flat))
    if flat.ndim != 1 or flat.dtype.kind not in "iuf" or not flat.size:
        return None
    if flat.dtype.kind == "f" and not (np.all(np.isfinite(flat)) and np.all(flat == np.round(flat))):
        return None
    return flat if float(flat.min()) >= 0 else None


def _label_agreement(ref: np.ndarray | list[np.ndarray], got: np.ndarray | list[np.ndarray]) -> float:
    """The share of equal elements, run by run (a run whose shape changed agrees on nothing)."""
    pairs = list(zip(ref, got, strict=False)) if isinstance(ref, list) else [(ref, got)]
    shares = []
    for a, b in ((np.asarray(x), np.asarray(y)) for x, y in pairs):
        shares.append(float((a == b).mean()) if a.shape == b.shape and a.size else float(a.shape == b.shape))
    return float(np.mean(shares)) if shares else 1.0


def _figures(name: str, ref: np.ndarray | list[np.ndarray], got: np.ndarray | list[np.ndarray],
             labelled: bool) -> OutputFigures:
    if isinstance(ref, list) or isinstance(got, list):
        kind = "values" if all(np.asarray(r).dtype.kind in "fc" for r in (ref if isinstance(ref, list) else [ref])) \
            else "labels"
    else:
        kind = output_kind(name, ref, labelled)
    if kind == "labels":
        share = _label_agreement(ref, got)
        return OutputFigures(name, kind, share, None, None, 1.0 - share, "agreement")
    agreement: float | None = None
    if kind in ("scores", "ambiguous"):
        agreement = float((np.asarray(ref).argmax(-1) == np.asarray(got).argmax(-1)).mean())
    cosine = rel = column = None
    drop, metric = (1.0 - agreement, "argmax") if agreement is not None else (0.0, "cosine")
    if kind in ("values", "ambiguous"):
        cosine, rel = _value_figures(ref, got)
        column = _column_error(ref, got)
        # 1 - cos for the direction; rel^2 / 2 equals 1 - cos when the norms agree and also catches a scale error;
        # the worst column's error the same way, so an output of small scale beside a large one counts too.
        candidates = {"cosine": 1.0 - cosine, "relative error": rel * rel / 2}
        if column is not None:
            candidates["column relative error"] = column * column / 2
        rounded = {key: round(min(1.0, value), 12) for key, value in candidates.items()}  # float noise is no drop
        worst = max(rounded, key=lambda key: rounded[key])  # on a tie, the first: direction, then row, then column
        value_drop = rounded[worst]
        if value_drop > drop or agreement is None:
            drop, metric = value_drop, worst
    return OutputFigures(name, kind, agreement, cosine, rel, max(0.0, drop), metric, column)


def compare(reference: Outputs, candidate: Outputs, labels: np.ndarray | None) -> Agreement:
    """The gate's figures for `candidate` against `reference` (same output names, same samples); `labels` count
    only when they are class ids (_class_labels)."""
    labels = _class_labels(labels)
    figures: list[OutputFigures] = []
    max_error, mean_cosine = 0.0, 1.0
    for name, ref in reference.items():
        got = candidate[name]
        ref_runs = ref if isinstance(ref, list) else [ref]
        got_runs = got if isinstance(got, list) else [got]
        floats = all(np.asarray(r).dtype.kind in "fc" for r in ref_runs)
        if floats and not all(np.all(np.isfinite(np.asarray(g))) for g in got_runs):
            return Agreement(_count(reference), math.inf, math.nan, None, None, None, math.inf, "non-finite output",
                             (OutputFigures(name, "values", None, None, None, math.inf, "non-finite output"),))
        if floats and all(np.shape(a) == np.shape(b) for a, b in zip(ref_runs, got_runs, strict=False)):
            for a, b in zip(ref_runs, got_runs, strict=True):
                if np.size(a):
                    max_error = max(max_error, float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b)))))
            if not isinstance(ref, list):
                mean_cosine = min(mean_cosine, _cosine(ref, np.asarray(got)))
        figures.append(_figures(name, ref, got, labels is not None))
    scored = [f for f in figures if f.kind in ("scores", "ambiguous")]
    agreement = min((f.agreement for f in scored if f.agreement is not None), default=None)
    before = after = None
    worst = max(figures, key=lambda f: f.drop) if figures else None
    drop, kind = (worst.drop, worst.metric) if worst else (0.0, "cosine")
    first_scores = next((f.name for f in scored), None)
    if labels is not None and first_scores is not None and not isinstance(reference[first_scores], list):
        truth = labels.reshape(len(labels), -1)[:, 0] if labels.ndim > 1 else labels
        ref_scores = np.asarray(reference[first_scores])
        if len(ref_scores) == len(truth):
            ref_pred = ref_scores.reshape(len(truth), -1).argmax(-1)
            got_pred = np.asarray(candidate[first_scores]).reshape(len(truth), -1).argmax(-1)
            before, after = float((ref_pred == truth).mean()), float((got_pred == truth).mean())
            others = [f.drop for f in figures if f.name != first_scores]
            others += [f.drop for f in figures if f.name == first_scores and f.kind == "ambiguous" and
                       f.metric != "argmax"]
            drop, kind = before - after, "accuracy"
            if others and max(others) > max(0.0, drop):
                worst_other = max((f for f in figures if f.drop == max(others)), key=lambda f: f.drop)
                drop, kind = worst_other.drop, worst_other.metric
    return Agreement(_count(reference), max_error, mean_cosine, agreement, before, after, max(0.0, drop), kind,
                     tuple(figures))


def _count(outputs: Outputs) -> int:
    first = next(iter(outputs.values()), None)
    if first is None:
        return 0
    return sum(len(np.atleast_1d(r)) for r in first) if isinstance(first, list) else len(np.atleast_1d(first))
