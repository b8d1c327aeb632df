"""The quantization report: what was tried, what passed, and size, latency and accuracy before and after.

It is stored three ways: as JSON beside the output model (`MODEL.quantization.json`), inside the model under the
ONNX metadata_props key `mlpack.quantization`, and in the model card's `quantization` field when the model carries a
card (metadata key `mlpack.card`, the shared model-card contract).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlpk.packager import card as cards
from mlpk.packager.errors import MlpackError
from mlpk.packager.quantize.gate import Agreement
from mlpk.packager.quantize.measure import Latency
from mlpk.packager.quantize.methods import Attempt
from mlpk.packager.quantize.prepare import Step

if TYPE_CHECKING:
    import onnx

METADATA_KEY = "mlpack.quantization"
SCHEMA = "mlpack.quantization/v1"
NOTHING_QUANTIZED = "nothing was quantized"  # how a Trial's error starts when the quantizer changed no op


class Outcome(enum.StrEnum):
    """How far one attempt got, worst first: nothing to quantize, no candidate that loads and runs, gated."""

    NOTHING_QUANTIZED = "nothing quantized"
    BROKEN = "does not load or run"
    GATED = "gated"


@dataclass(frozen=True, slots=True)
class Trial:
    """One attempt and its outcome: the gate's figures on the data named `evaluated_on`, or the error that
    stopped it."""

    attempt: Attempt
    agreement: Agreement | None
    passed: bool
    size_bytes: int | None = None
    error: str | None = None
    evaluated_on: str | None = None

    @property
    def outcome(self) -> Outcome:
        if self.agreement is not None:
            return Outcome.GATED
        nothing = (self.error or "").startswith(NOTHING_QUANTIZED)
        return Outcome.NOTHING_QUANTIZED if nothing else Outcome.BROKEN

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.attempt.label, "settings": self.attempt.settings(), "passed": self.passed,
                "outcome": str(self.outcome), "size_bytes": self.size_bytes, "error": self.error,
                "gate": self.agreement.to_dict() if self.agreement else None,
                "evaluated_on": self.evaluated_on}


@dataclass(frozen=True, slots=True)
class QuantizationReport:
    """Everything a user needs to trust (or refuse) the quantized model."""

    source: Path
    output: Path
    mode: str
    backend: str
    max_drop: float
    method: dict[str, Any]
    preparation: tuple[Step, ...]
    calibration_source: str | None
    evaluation_source: str
    trials: tuple[Trial, ...]
    size_before: int
    size_after: int  # the quantized model before this report was embedded in it (a few KB less than the file)
    latency: Latency

    @property
    def chosen(self) -> Trial:
        return next(t for t in self.trials if t.passed)

    @property
    def size_ratio(self) -> float:
        return self.size_after / self.size_before

    def to_dict(self) -> dict[str, Any]:
        chosen = self.chosen
        return {
            "schema": SCHEMA, "source": self.source.name, "output": self.output.name, "mode": self.mode,
            "backend": self.backend, "max_drop": self.max_drop, "method": self.method,
            "preparation": [{"step": s.name, "kept": s.kept, "detail": s.detail} for s in self.preparation],
            "calibration_data": self.calibration_source, "evaluation_data": self.evaluation_source,
            "chosen": chosen.attempt.label, "fallback": chosen is not self.trials[0],
            "kept_in_float": [k.to_dict() for k in chosen.attempt.kept_in_float],
            "size": {"before_bytes": self.size_before, "after_bytes": self.size_after,
                     "ratio": round(self.size_ratio, 4)},
            "latency": self.latency.to_dict(),
            "accuracy": chosen.agreement.to_dict() if chosen.agreement else None,
            "attempts": [t.to_dict() for t in self.trials],
        }


def report_path(output: Path) -> Path:
    """Where the JSON report of `output` goes: beside it, MODEL.quantization.json."""
    return output.with_name(output.stem + ".quantization.json")


def embed(model: onnx.ModelProto, report: dict[str, Any]) -> bool:
    """Store `report` in the model's metadata, and in its embedded model card when it has one (returns whether it
    had one). A card that cannot be read is left as it is; the report key still holds the figures."""
    keep = [prop for prop in model.metadata_props if prop.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(report, sort_keys=True)
    try:
        card = cards.from_model(model)
    except MlpackError:
        return False
    if card is None:
        return False
    cards.embed(model, card.with_(quantization=card_summary(report)))
    return True


def card_summary(report: dict[str, Any]) -> dict[str, Any]:
    """The model card's `quantization` field: the outcome without the per-attempt detail."""
    keys = ("mode", "backend", "max_drop", "chosen", "fallback", "size", "latency", "accuracy", "method")
    return {k: report[k] for k in keys}
