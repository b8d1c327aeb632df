"""Parity between a source model and its ONNX form: per-output error figures and the gate over them.

Both models run on the same inputs; for each output we report the max absolute and relative error, the cosine
similarity, and, for classifier outputs, how often the labels (argmax of scores, or the label tensor) agree. The
gate passes an output when every element satisfies numpy's allclose rule `|onnx - source| <= atol + rtol * |source|`
and the label agreement is at least `agreement`; a failure is a ValidationError carrying the whole table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mlpk.packager.errors import ConfigError, InternalError, ValidationError

_TINY = 1e-12
_TOLERANCE_HINT = "e.g. --tolerance atol=1e-3,rtol=1e-2,agreement=0.99"


@dataclass(frozen=True, slots=True)
class Tolerance:
    """The parity gate: allclose bounds on float outputs and the least label agreement (0..1)."""

    atol: float = 1e-4
    rtol: float = 1e-3
    agreement: float = 1.0

    def to_dict(self) -> dict[str, float]:
        return {"atol": self.atol, "rtol": self.rtol, "agreement": self.agreement}

    def updated(self, text: str) -> Tolerance:
        """This tolerance with `atol=1e-3,rtol=1e-2,agreement=0.99` (any subset) applied; for --tolerance."""
        changes: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, value = item.partition("=")
            if not sep or key.strip() not in ("atol", "rtol", "agreement"):
                raise ConfigError(f"--tolerance {text!r}: {item!r} is not KEY=VALUE with KEY atol, rtol or agreement",
                                  hint=_TOLERANCE_HINT)
            try:
                number = float(value)
            except ValueError as err:
                raise ConfigError(f"--tolerance {text!r}: {value!r} is not a number", hint=_TOLERANCE_HINT) from err
            if not number >= 0 or (key.strip() == "agreement" and number > 1):  # NaN fails too
                raise ConfigError(f"--tolerance {text!r}: {key.strip()} must be >= 0 (agreement at most 1)",
                                  hint=_TOLERANCE_HINT)
            changes[key.strip()] = number
        return replace(self, **changes)


# Defaults per source kind: float32 conversions of these frameworks land far below 1e-4 (DESIGN.md, Verified:
# a Keras CNN converted with max abs error 3e-8); scikit-learn computes in float64 and the ONNX model in float32.
DEFAULT_TOLERANCE: dict[str, Tolerance] = {
    "keras": Tolerance(atol=1e-4, rtol=1e-3),
    "torch": Tolerance(atol=1e-4, rtol=1e-3),
    "sklearn": Tolerance(atol=1e-4, rtol=1e-3),
    # The same graph, optimized (fused kernels, folded constants) against unoptimized: rounding differs like a
    # framework's. 1e-6 rejected correct third-party models at 4e-5 (issue 13).
    "onnx": Tolerance(atol=1e-4, rtol=1e-3),
}


@dataclass(frozen=True, slots=True)
class OutputParity:
    """The figures for one output; `agreement` is None for outputs that are not classifier outputs. The error
    figures are over the values both give as finite numbers; `non_finite` counts the values where one gives NaN or
    an infinity and the other does not give the same (a NaN both give, or the same infinity, is a match)."""

    name: str
    shape: tuple[int, ...]
    max_abs: float
    max_rel: float
    cosine: float
    agreement: float | None
    passed: bool
    non_finite: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "max_abs": self.max_abs, "max_rel": self.max_rel,
                "cosine": self.cosine, "agreement": self.agreement, "passed": self.passed,
                **({"non_finite_mismatches": self.non_finite} if self.non_finite else {})}


@dataclass(frozen=True, slots=True)
class ParityReport:
    """Parity over all outputs, with the inputs' origin (`sample-data FILE` or `generated`) and sample count."""

    outputs: tuple[OutputParity, ...]
    tolerance: Tolerance
    samples: int
    inputs_from: str
    unchecked: tuple[str, ...] = ()  # ONNX outputs the source has no counterpart for (e.g. extra score tensors)

    @property
    def passed(self) -> bool:
        return all(out.passed for out in self.outputs)

    def to_dict(self) -> dict[str, Any]:
        return {"passed": self.passed, "samples": self.samples, "inputs_from": self.inputs_from,
                "tolerance": self.tolerance.to_dict(), "outputs": [out.to_dict() for out in self.outputs],
                "unchecked": list(self.unchecked)}

    def summary(self) -> str:
        """One line per output, for error messages: `probabilities max_abs=2.1e-03 ... agreement=0.98 FAIL`."""
        parts = []
        for out in self.outputs:
            agree = "" if out.agreement is None else f" agreement={out.agreement:.4f}"
            odd = f" NaN/inf where the other is not: {out.non_finite} values" if out.non_finite else ""
            parts.append(f"{out.name}: max_abs={out.max_abs:.3g} max_rel={out.max_rel:.3g} "
                         f"cosine={out.cosine:.6f}{agree}{odd} {'ok' if out.passed else 'FAIL'}")
        return "; ".join(parts)

    def check(self, model: str, narrowed: Sequence[str] = ()) -> None:
        """Raise ValidationError naming the failing outputs when the gate does not pass. `narrowed`: the inputs
        whose float64 samples the source took as they are and the ONNX model as float32."""
        if not self.passed:
            tol = self.tolerance
            hint = ("check the input spec and sample data; raise the bound explicitly with "
                    "--tolerance atol=…,rtol=…,agreement=… if the difference is acceptable")
            decided = [(out.name, out.agreement) for out in self.outputs if not out.passed
                       and out.agreement is not None and out.agreement < tol.agreement]
            # Values that point elsewhere (cosine 0.78 for a transformer's padded positions, 0.80 for a layer
            # that normalizes over the batch), not the last bits of float32: no tolerance makes them right.
            apart = [out for out in self.outputs if not out.passed and out.cosine < GROSS_COSINE
                     and out.max_abs > 10 * tol.atol]
            if decided:  # other labels on some samples: no rounding, and no tolerance makes the model right
                hint = (f"the ONNX model decides differently from the source on {1 - decided[0][1]:.1%} "
                        f"of the samples ('{decided[0][0]}'), which is more than rounding: check the input spec "
                        "and sample data; a looser --tolerance would ship a model that decides otherwise")
            elif apart:
                hint = (f"the ONNX model computes something else than the source ('{apart[0].name}': cosine "
                        f"{apart[0].cosine:.4f}), which is more than rounding: check the input spec and sample "
                        "data; a looser --tolerance would ship a model that answers otherwise")
            if narrowed:
                wrong = decided or apart
                hint = (f"the samples of {', '.join(narrowed)} are float64, which the source computes with, and "
                        "the ONNX model takes them as float32: keep float64 with --input NAME:SHAPE:float64 "
                        "(mlpack convert and mlpack export take it), or check the sample data" + (
                            "; if the model still differs in float64, it computes something else than the source, "
                            "and a looser --tolerance would ship it" if wrong else ""))
            if any(out.non_finite for out in self.outputs):  # no tolerance accepts a NaN against a number
                hint = ("one side gives NaN or infinity where the other does not, which no --tolerance accepts: "
                        "check the sample data for NaN or infinite inputs, and how each side treats them")
            raise ValidationError(
                f"{model}: ONNX output differs from the source beyond tolerance "
                f"(atol={tol.atol:g}, rtol={tol.rtol:g}, agreement={tol.agreement:g}) on {self.samples} samples "
                f"from {self.inputs_from}: {self.summary()}", hint=hint)


GROSS_COSINE = 0.9999  # below it (and 10 atol apart), a failing output is more than float32 rounding


def _is_label_tensor(array: np.ndarray) -> bool:
    return array.dtype.kind in "iubUSO" and array.ndim <= 2 and (array.ndim < 2 or array.shape[-1] == 1)


def _is_score_tensor(name: str, array: np.ndarray) -> bool:
    # Class scores: 2-D floats with several columns (logits or probabilities), the common classifier head.
    return array.dtype.kind == "f" and array.ndim == 2 and array.shape[1] > 1


def compare_output(name: str, onnx_out: np.ndarray, source_out: np.ndarray, tolerance: Tolerance, *,
                   ties: np.ndarray | None = None) -> OutputParity:
    """Figures and verdict for one output pair (ONNX result first, source result second). `ties`: rows where the
    source's class scores tie (_tied_rows), whose labels agree whichever class each side names."""
    onnx_out, source_out = np.asarray(onnx_out), np.asarray(source_out)
    if onnx_out.size != source_out.size:
        raise ValidationError(f"output {name!r}: ONNX gives shape {onnx_out.shape}, the source {source_out.shape}",
                              hint="the conversion changed the output's shape; check --input shapes")
    if _squeezed(onnx_out.shape) != _squeezed(source_out.shape):
        # As many values laid out otherwise (a time-major GRU's [12, 4, 5] as [2, 24, 5]: the export kept a size of
        # the example it traced in a Reshape): compared flat, they would agree while out[t] is not step t.
        raise ValidationError(f"output {name!r}: ONNX gives shape {list(onnx_out.shape)}, the source "
                              f"{list(source_out.shape)}: the same values laid out otherwise",
                              hint="the export kept a size of the example input in the graph; give that axis a "
                              "fixed size with --input NAME:SHAPE:DTYPE, or compute the size from the input in the "
                              "model")
    source_out = source_out.reshape(onnx_out.shape)
    if onnx_out.dtype.kind in "USO" or source_out.dtype.kind in "USO":
        same = onnx_out.astype(str) == source_out.astype(str)
        if ties is not None and len(ties) == same.size:
            same = same | ties.reshape(same.shape)
        matching = float(same.mean()) if same.size else 1.0
        # Strings have no distance: the error figures are 0 when all match and 1 otherwise (JSON-safe, unlike inf).
        mismatch = 0.0 if same.all() else 1.0
        return OutputParity(name, onnx_out.shape, mismatch, mismatch, 1.0 - mismatch, matching,
                            matching >= tolerance.agreement)
    got, want = onnx_out.astype(np.float64), source_out.astype(np.float64)
    finite = np.isfinite(got) & np.isfinite(want)
    odd = int(np.count_nonzero(~finite & ~((np.isnan(got) & np.isnan(want)) | (got == want))))
    if not finite.all():  # the figures are over the finite pairs; a NaN both give, or the same infinity, matches
        got, want = np.where(finite, got, 0.0), np.where(finite, want, 0.0)
    diff = np.abs(got - want)
    max_abs = float(diff.max()) if diff.size else 0.0
    # Relative error only where the reference is not ~0 (below atol): float32 underflow of a 1e-30 probability
    # to 0 is a 100 % relative error that means nothing.
    significant = np.abs(want) > max(tolerance.atol, _TINY)
    max_rel = float((diff[significant] / np.abs(want[significant])).max()) if significant.any() else 0.0
    norms = float(np.linalg.norm(got) * np.linalg.norm(want))
    cosine = float(np.dot(got.ravel(), want.ravel()) / norms) if norms > 0 else (1.0 if max_abs == 0 else 0.0)
    close = bool(np.all(diff <= tolerance.atol + tolerance.rtol * np.abs(want)))
    agreement: float | None = None
    if _is_label_tensor(source_out):
        same = onnx_out.ravel() == source_out.ravel()
        if ties is not None and len(ties) == same.size:
            same = same | ties
        agreement = float(np.mean(same)) if onnx_out.size else 1.0
        close = close or agreement >= tolerance.agreement  # integer labels: agreement is the figure that counts
    elif _is_score_tensor(name, source_out):
        # A row whose two best source scores are within tolerance of each other is a tie, not a decision: either
        # class is a faithful answer (this keeps non-classifier 2-D outputs from failing on noise).
        top2 = np.sort(want, axis=1)[:, -2:]
        tie = (top2[:, 1] - top2[:, 0]) <= tolerance.atol + tolerance.rtol * np.abs(top2[:, 1])
        agreement = float(np.mean((got.argmax(axis=1) == want.argmax(axis=1)) | tie))
    passed = not odd and close and (agreement is None or agreement >= tolerance.agreement)
    return OutputParity(name, onnx_out.shape, max_abs, max_rel, cosine, agreement, passed, odd)


def _squeezed(shape: tuple[int, ...]) -> tuple[int, ...]:
    """A shape without its axes of size 1: the layouts that hold the same values in the same order ([n] and
    [n, 1], a Keras [n, 1, 1])."""
    return tuple(size for size in shape if size != 1)


def _flat(value: Any) -> np.ndarray:
    """An output as one array; the runs of an output whose shape differs from feed to feed (images of several
    sizes) as one flat vector of all their values."""
    if isinstance(value, list):
        return np.concatenate([np.asarray(v).ravel() for v in value]) if value else np.zeros(0)
    return np.asarray(value)


def compare(onnx_outputs: Mapping[str, Any], source_outputs: Sequence[Any] | Mapping[str, Any],
            tolerance: Tolerance, *, samples: int, inputs_from: str) -> ParityReport:
    """Compare every ONNX output with the source's: by name when the source names its outputs, else by position."""
    names = list(onnx_outputs)
    if isinstance(source_outputs, Mapping):
        if set(source_outputs) >= set(names):
            pairs = [(name, source_outputs[name]) for name in names]
        else:
            pairs = list(zip(names, source_outputs.values(), strict=False))
    else:
        pairs = list(zip(names, source_outputs, strict=False))
    if not pairs:
        raise InternalError(f"the source gave no outputs to compare with the ONNX model's {names}")
    ties = _tied_rows([_flat(ref) for _, ref in pairs], tolerance)
    results = tuple(compare_output(name, _flat(onnx_outputs[name]), _flat(ref), tolerance, ties=ties)
                    for name, ref in pairs)
    return ParityReport(results, tolerance, samples, inputs_from, tuple(names[len(pairs):]))


def _tied_rows(source_outputs: Sequence[np.ndarray], tolerance: Tolerance) -> np.ndarray | None:
    """The rows where the source's class scores (its first output of 2-D floats with several columns) tie: the two
    best within tolerance of each other (a forest of 100 trees voting 50/50). Either class is a faithful label for
    such a row; scikit-learn takes the first, and onnxruntime's sum of votes, 0.49999994 against 0.50000006, the
    other. None without class scores."""
    scores = next((array for array in source_outputs if array.dtype.kind == "f" and array.ndim == 2 and
                   array.shape[1] > 1), None)
    if scores is None:
        return None
    top2 = np.sort(scores.astype(np.float64), axis=1)[:, -2:]
    return (top2[:, 1] - top2[:, 0]) <= tolerance.atol + tolerance.rtol * np.abs(top2[:, 1])
