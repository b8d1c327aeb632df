"""The accuracy gate: how far a quantized model's outputs are from the FP32 model's on the same evaluation data.

Figures (per output, the worst output counts): max absolute error, mean per-sample cosine similarity, argmax
agreement for classifier-shaped outputs (rank >= 2, last axis > 1), and, when labels are given, the accuracy before
and after. The gate's single `drop` is, in that order of preference: the accuracy drop (with labels), 1 - argmax
agreement, or 1 - cosine. A non-finite output is an infinite drop: a silent NaN model never passes.
"""

from __future__ import annotations

import math
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlpk.packager.errors import InputError, QuantizationError
from mlpk.packager.quantize.data import Dataset, InputSpec

Outputs = dict[str, np.ndarray]


@dataclass(frozen=True, slots=True)
class Agreement:
    """How closely a candidate model follows the reference on `samples` evaluation samples."""

    samples: int
    max_abs_error: float
    cosine: float
    argmax_agreement: float | None
    accuracy_before: float | None
    accuracy_after: float | None
    drop: float
    drop_kind: str  # accuracy | argmax | cosine

    def passes(self, max_drop: float) -> bool:
        return math.isfinite(self.drop) and self.drop <= max_drop

    def to_dict(self) -> dict[str, Any]:
        return {k: (v if not isinstance(v, float) or math.isfinite(v) else str(v)) for k, v in asdict(self).items()}

    def summary(self) -> str:
        parts = [f"max error {self.max_abs_error:.3g}", f"cosine {self.cosine:.5f}"]
        if self.argmax_agreement is not None:
            parts.append(f"argmax agreement {self.argmax_agreement:.2%}")
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

    options = ort.SessionOptions()
    options.log_severity_level = 3
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
                                hint="try another --mode, or report the model to mlpack") from err


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
                                hint="the candidate is not usable; try another --mode") from err
    if done.returncode < 0:
        name = signal.Signals(-done.returncode).name
        raise QuantizationError(f"onnxruntime crashed ({name}) loading the candidate with its default graph "
                                "optimizations; a server would crash the same way",
                                hint="try another --mode, or keep the ops named in the report in float")
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        reason = lines[-1].replace(str(path), path.name) if lines else done.returncode
        raise QuantizationError(f"onnxruntime cannot load {path.name}: {reason}",
                                hint="try another --mode")


def batch_size(specs: list[InputSpec]) -> int:
    """The evaluation batch: the fixed batch dimension if the model has one, else 64."""
    fixed = {s.shape[0] for s in specs if s.shape and isinstance(s.shape[0], int) and s.shape[0] > 0}
    return fixed.pop() if len(fixed) == 1 else 64


def run(session: Any, data: Dataset, batch: int, names: list[str] | None = None) -> Outputs:
    """All outputs (or `names`) of `session` on `data`, concatenated along the sample axis."""
    names = names or [o.name for o in session.get_outputs()]
    parts: dict[str, list[np.ndarray]] = {n: [] for n in names}
    try:
        for feed in data.batches(batch):
            for name, value in zip(names, session.run(names, feed), strict=True):
                parts[name].append(np.asarray(value))
    except Exception as err:  # onnxruntime's own error types
        raise InputError(f"the model does not run on {data.source}: {str(err).splitlines()[0]}",
                         hint="check the data's shapes and dtypes against the model's inputs") from err
    return {n: np.concatenate(p) if p[0].ndim else p[0] for n, p in parts.items()}


def _classifier(output: np.ndarray) -> bool:
    return output.dtype.kind == "f" and output.ndim >= 2 and output.shape[-1] > 1


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean per-sample cosine similarity of float outputs (1.0 where both samples are all zeros)."""
    a = a.reshape(len(a), -1).astype(np.float64)
    b = b.reshape(len(b), -1).astype(np.float64)
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    dots = (a * b).sum(axis=1)
    both_zero = (norms == 0) & (np.abs(a).sum(axis=1) == 0) & (np.abs(b).sum(axis=1) == 0)
    cos = np.where(norms > 0, dots / np.where(norms > 0, norms, 1), np.where(both_zero, 1.0, 0.0))
    return float(cos.mean())


def compare(reference: Outputs, candidate: Outputs, labels: np.ndarray | None) -> Agreement:
    """The gate's figures for `candidate` against `reference` (same output names, same samples)."""
    max_error, cosine, agreement = 0.0, 1.0, None
    first_classifier = next((n for n, v in reference.items() if _classifier(v)), None)
    for name, ref in reference.items():
        got = candidate[name]
        if ref.dtype.kind not in "fc":
            equal = float((ref == got).mean()) if ref.shape == got.shape else 0.0
            cosine = min(cosine, equal)
            continue
        if not np.all(np.isfinite(got)):
            return Agreement(len(ref), math.inf, math.nan, None, None, None, math.inf, "non-finite output")
        max_error = max(max_error, float(np.max(np.abs(ref.astype(np.float64) - got.astype(np.float64)))))
        cosine = min(cosine, _cosine(ref, got))
        if _classifier(ref):
            same = float((ref.argmax(-1) == got.argmax(-1)).mean())
            agreement = same if agreement is None else min(agreement, same)
    before = after = None
    if labels is not None and first_classifier is not None:
        truth = labels.reshape(len(labels), -1)[:, 0] if labels.ndim > 1 else labels
        ref_pred = reference[first_classifier].reshape(len(truth), -1).argmax(-1)
        got_pred = candidate[first_classifier].reshape(len(truth), -1).argmax(-1)
        before, after = float((ref_pred == truth).mean()), float((got_pred == truth).mean())
        drop, kind = before - after, "accuracy"
    elif agreement is not None:
        drop, kind = 1.0 - agreement, "argmax"
    else:
        drop, kind = 1.0 - cosine, "cosine"
    samples = len(next(iter(reference.values())))
    return Agreement(samples, max_error, cosine, agreement, before, after, max(0.0, drop), kind)
