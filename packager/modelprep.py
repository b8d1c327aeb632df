"""The model half of an export: convert (parity-gated) and optimize per the target, behind the accuracy gate.

Explicit quantization that fails its gate stops the export with the figures (QuantizationError). The profiles'
`auto` mode is a preference, not a demand: it runs only on real evidence (the user's samples, at least
`MIN_AUTO_SAMPLES` of them: on fewer, or on synthetic data, an agreement figure proves nothing), and when its
quantization fails the gate, the FP32 model ships and the report says why — never a silently broken model, and
never a failed export for a default the user did not ask for.

The model layer also carries `warmup.npz`, one of the user's own samples, which the server runs before it reports
ready (runtimes/warmup.py); without samples the card's signature says which shapes run.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlpk.packager import card as cards
from mlpk.packager import feeds
from mlpk.packager.convert.pipeline import convert
from mlpk.packager.convert.registry import ConvertOptions
from mlpk.packager.errors import QuantizationError
from mlpk.packager.parity import ParityReport
from mlpk.packager.quantize.options import EXPORT_FLAGS, Backend, QuantizeOptions
from mlpk.packager.quantize.pipeline import quantize
from mlpk.packager.signature import Signature
from mlpk.packager.targets import QuantizeMode, Target

if TYPE_CHECKING:  # export imports this module
    from mlpk.packager.export import ExportRequest
    from mlpk.packager.feeds import Feeds

MIN_AUTO_SAMPLES = 32
WARMUP_FILE = "warmup.npz"
_ORT = re.compile(r"^onnxruntime(?:-gpu)?(?:\[[^\]]*\])?\s*(?:==|>=|~=)\s*([0-9]+\.[0-9]+(?:\.[0-9]+)?)")


@dataclass(frozen=True, slots=True)
class Optimization:
    """What the optimization step tried (`requested`; `required`: a gate failure stops the export), what shipped
    (`mode`: none, or the quantization that passed its gate, with the quantization report's `figures`) and, when
    FP32 shipped instead of what was asked, why."""

    mode: str
    requested: QuantizeMode
    required: bool
    kept_fp32_because: str | None = None
    figures: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {**self.figures, "mode": self.mode, "requested": str(self.requested), "required": self.required}
        if self.kept_fp32_because is not None:
            out["kept_fp32_because"] = self.kept_fp32_because
        return out


@dataclass(frozen=True, slots=True)
class PreparedModel:
    """The model files that go into the model layer, and what the stages measured."""

    name: str
    sha256: str  # of the source model as given
    source_kind: str
    files: dict[str, Path]  # name in the model directory -> file
    card: cards.ModelCard  # the card that ships (inputs, outputs, signature, parity, quantization)
    exporter: str
    parity: ParityReport | None
    optimization: Optimization

    def summary(self) -> dict[str, Any]:
        """The card as the export report lists it."""
        return {"name": self.card.name, "source": self.card.source.to_dict(), "exporter": self.exporter,
                "inputs": [s.to_dict() for s in self.card.inputs], "outputs": [s.to_dict() for s in self.card.outputs],
                "parity": self.parity.to_dict() if self.parity else None, "signature": self.card.signature}


def runtime_ort_version(target: Target) -> str | None:
    """The onnxruntime version the target's image will run (its pinned or minimum version), if stated."""
    for requirement in target.wheels.requirements:
        match = _ORT.match(requirement.strip())
        if match:
            return match.group(1)
    return None


def chosen_mode(target: Target, explicit: str | None, has_calibration: bool) -> tuple[QuantizeMode, bool]:
    """(mode, required): the quantization to run and whether a gate failure must stop the export. The one
    quantization policy: an explicit mode is required; `auto` is the target's default (TensorRT: int8-static with
    calibration data, else fp16; CPU: int8-dynamic), tried only on real evidence and kept only behind the gate."""
    mode = QuantizeMode(explicit or target.optimize.quantize)
    if mode is not QuantizeMode.AUTO:
        return mode, mode is not QuantizeMode.NONE
    if target.optimize.consumer == "tensorrt":
        return (QuantizeMode.INT8_STATIC if has_calibration else QuantizeMode.FP16), False
    return QuantizeMode.INT8_DYNAMIC, False


def planned_mode(target: Target, explicit: str | None, has_calibration: bool) -> str:
    """chosen_mode in words, for `mlpack export --plan`."""
    mode, required = chosen_mode(target, explicit, has_calibration)
    if required or mode is QuantizeMode.NONE or target.optimize.consumer == "tensorrt":
        return str(mode)
    return f"{mode} (only on at least {MIN_AUTO_SAMPLES} real samples, kept only if it passes the gate, else fp32)"


def prepare(request: ExportRequest, target: Target, workdir: Path, step: Callable[[str], None]) -> PreparedModel:
    """Convert `request.model` and optimize it for `target` inside `workdir`."""
    workdir.mkdir(parents=True, exist_ok=True)
    options = ConvertOptions(inputs=request.inputs, model_class=request.model_class, model_args=request.model_args,
                             trust_pickle=request.trust_pickle)
    converted = convert(request.model, workdir / "model.onnx", options=options, sample_data=request.sample_data,
                        tolerance=request.tolerance, ort_version=runtime_ort_version(target),
                        name=request.model_name())
    card = converted.card
    files = {f.name: f for f in converted.files if not f.name.endswith(cards.SUFFIX)}
    mode, required = chosen_mode(target, request.quantize, request.calibration is not None)
    optimization = Optimization("none", mode, required)
    thin = None if required or mode is QuantizeMode.NONE else thin_evidence(request, card, converted.evidence)
    if thin:
        optimization = replace(optimization, kept_fp32_because=thin)
    elif mode is not QuantizeMode.NONE:
        step(f"quantizing: {mode}")
        try:
            figures = _quantize(converted.output, workdir, mode, target, request)
            optimization = Optimization(str(figures["mode"]), mode, required, figures=figures)
        except QuantizationError as err:
            if required:
                raise
            optimization = Optimization("none", mode, False, kept_fp32_because=err.one_line())
        else:
            useless = None if required else no_gain(figures)
            if useless:
                optimization = Optimization("none", mode, False, kept_fp32_because=useless)
            else:
                files = {"model.onnx": workdir / "quantized.onnx"}
                card = cards.read(files["model.onnx"]) or card
    if converted.evidence is not None and not converted.evidence.synthetic:
        warmup = workdir / WARMUP_FILE
        first = converted.evidence.first()
        arrays: dict[str, Any] = {k: v.astype(str) if v.dtype == object else v for k, v in first.items()}
        np.savez(warmup, **arrays)
        files[WARMUP_FILE] = warmup
        card = card.with_(extra={**card.extra, "warmup": {"file": WARMUP_FILE, "origin": converted.evidence.source}})
    card_path = workdir / cards.FILE_NAME
    card_path.write_text(json.dumps(card.to_dict(), indent=2, sort_keys=True) + "\n")
    files[cards.FILE_NAME] = card_path
    return PreparedModel(card.name, card.source.sha256, card.source.kind, files, card, converted.exporter,
                         converted.parity, optimization)


def no_gain(figures: Mapping[str, Any]) -> str | None:
    """Why `auto` keeps FP32 although the quantized model passed the gate: it is neither smaller nor faster here
    (a small model's INT8 graph can be both larger, with its scales and zero points, and slower)."""
    ratio = float(figures.get("size", {}).get("ratio", 0.0))
    speedup = float(figures.get("latency", {}).get("speedup", math.inf))
    if ratio >= 1.0 and speedup <= 1.0:
        return (f"{figures.get('mode')} passed the gate but is no gain here: {ratio:.2f}x the size and {speedup:.2f}x "
                "the speed of FP32 (choose it anyway with --quantize MODE)")
    return None


def thin_evidence(request: ExportRequest, card: cards.ModelCard, parity_data: Feeds | None = None) -> str | None:
    """Why `auto` must not quantize on the evidence at hand, or None when there is enough of it."""
    path = request.calibration or request.sample_data
    if path is None:
        return (f"auto quantizes only on real inputs, and none were given (pass --sample-data or --calibration "
                f"with at least {MIN_AUTO_SAMPLES} representative samples, or choose with --quantize MODE)")
    if (request.calibration is None or _evaluation(request) is not None) and parity_data is not None \
            and not parity_data.synthetic:  # the gate judges on the sample data, which convert already read
        count = len(parity_data)  # (capped at 1024: far above the minimum)
        path = request.sample_data or path
    else:
        count = len(feeds.load(path, Signature.from_dict(card.signature or {})))
    if count < MIN_AUTO_SAMPLES:
        return (f"auto quantizes only on at least {MIN_AUTO_SAMPLES} real samples, and {path.name} holds {count} "
                f"(too few to tell a faithful model from a broken one; pass more, or choose with --quantize MODE)")
    return None


def _evaluation(request: ExportRequest) -> Path | None:
    """The data the gate judges on: the user's --sample-data when --calibration is other data (else the gate would
    judge on a held-out part of the calibration data, which may not be what the model will see); None when only one
    of them is given, or both name one file: a held-out part of it."""
    if request.calibration is None or request.sample_data is None:
        return None
    if request.calibration.resolve() == request.sample_data.resolve():
        return None
    return request.sample_data


def _quantize(model: Path, workdir: Path, mode: QuantizeMode, target: Target, request: ExportRequest
              ) -> dict[str, Any]:
    arches = {p.rsplit("/", 1)[-1] for p in target.platforms}
    options = QuantizeOptions(
        mode=mode, backend=Backend(target.optimize.consumer),
        calibration=request.calibration or request.sample_data, evaluation=_evaluation(request),
        max_drop=target.optimize.max_drop,
        # One model layer serves every platform of the target: choose INT8 types that are right on x86-64 when it
        # is among them (the stricter case: U8S8 saturation), else for arm64.
        arch="x86_64" if "amd64" in arches else "aarch64", flags=EXPORT_FLAGS)
    result = quantize(model, options, workdir / "quantized.onnx")
    data = result.to_dict()
    keep = ("mode", "backend", "chosen", "fallback", "size", "latency", "accuracy", "method", "max_drop",
            "calibration_data", "evaluation_data")
    return {k: data[k] for k in keep if k in data}
