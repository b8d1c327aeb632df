"""Quantization behind an accuracy gate: FP16, INT8 dynamic and INT8 static QDQ (issue 4).

    report = quantize(Path("model.onnx"), QuantizeOptions(Mode.INT8_STATIC, calibration=Path("data.npz")))

Modules, in the order a run uses them: options (what is asked, data types for the target CPU or TensorRT), data
(calibration / evaluation arrays), prepare (ORT pre-processing, onnxslim kept on parity), methods (the three
conversions), gate (figures against FP32), sensitivity (per-node error for the fallback), measure (size, latency),
report (JSON, model metadata, model card), pipeline (the fallback ladder). Heavy imports happen inside functions.
"""

from __future__ import annotations

from mlpk.packager.quantize.options import Backend, Calibration, Mode, QuantizeOptions
from mlpk.packager.quantize.pipeline import GateFailure, default_output, quantize
from mlpk.packager.quantize.report import QuantizationReport

__all__ = ["Backend", "Calibration", "GateFailure", "Mode", "QuantizationReport", "QuantizeOptions",
           "default_output", "quantize"]
