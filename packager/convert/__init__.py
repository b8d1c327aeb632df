"""Convert a trained model (ONNX, tf-keras / SavedModel, PyTorch, scikit-learn) to a checked ONNX model, prove
parity with its source, and write it with its model card — or write nothing.

    result = convert(Path("digits_cnn.h5"), Path("out/digits.onnx"), sample_data=Path("digits_test.npz"))

Stages: detect the format from content -> the converter registered for it -> unknown-op check -> onnxruntime
IR/opset compatibility -> parity (source framework vs onnxruntime) -> model card -> atomic write.
"""

from __future__ import annotations

from mlpk.packager.convert.pipeline import ConvertResult, convert
from mlpk.packager.convert.registry import ConvertOptions

__all__ = ["ConvertOptions", "ConvertResult", "convert"]
