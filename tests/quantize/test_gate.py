"""The gate's figures on hand-made outputs, and the data-type choices per target (pure Python)."""

from __future__ import annotations

import math
import platform

import numpy as np

from mlpk.packager.quantize import gate
from mlpk.packager.quantize.options import Backend, Mode, host_has_vnni, int8_types

RNG = np.random.default_rng(0)
LOGITS = RNG.standard_normal((200, 10)).astype(np.float32)


def test_identical_outputs_pass_with_zero_drop() -> None:
    got = gate.compare({"y": LOGITS}, {"y": LOGITS.copy()}, None)
    assert got.drop == 0 and got.argmax_agreement == 1.0 and got.drop_kind == "argmax" and got.passes(0.0)


def test_argmax_disagreement_is_the_drop_without_labels() -> None:
    flipped = LOGITS.copy()
    flipped[:20] = -flipped[:20]
    got = gate.compare({"y": LOGITS}, {"y": flipped}, None)
    assert got.argmax_agreement is not None and got.argmax_agreement <= 0.9
    assert math.isclose(got.drop, 1 - got.argmax_agreement) and not got.passes(0.01)


def test_labels_make_the_drop_an_accuracy_drop() -> None:
    labels = LOGITS.argmax(1)
    noisy = LOGITS + RNG.standard_normal(LOGITS.shape).astype(np.float32) * 0.5
    got = gate.compare({"y": LOGITS}, {"y": noisy}, labels)
    assert got.drop_kind == "accuracy" and got.accuracy_before == 1.0
    assert got.accuracy_after is not None and math.isclose(got.drop, 1.0 - got.accuracy_after)


def test_non_finite_output_never_passes() -> None:
    broken = LOGITS.copy()
    broken[3, 4] = np.nan
    got = gate.compare({"y": LOGITS}, {"y": broken}, None)
    assert not got.passes(0.99) and got.drop == math.inf


def test_regression_outputs_use_cosine() -> None:
    values = RNG.standard_normal((50, 1)).astype(np.float32)
    got = gate.compare({"y": values}, {"y": values * 1.001}, None)
    assert got.drop_kind == "cosine" and got.drop < 1e-6 and got.max_abs_error > 0


def test_data_types_follow_the_target() -> None:
    trt = int8_types(Mode.INT8_STATIC, Backend.TENSORRT, "x86_64")
    assert trt.symmetric and trt.activation_signed and trt.weight_signed
    cpu = int8_types(Mode.INT8_STATIC, Backend.CPU, "x86_64")
    assert not cpu.symmetric and cpu.activation_signed and cpu.weight_signed  # S8S8 QDQ
    # x86-64 runs S8S8 through U8S8 kernels: 7-bit weights unless the CPU is known to have VNNI
    assert cpu.reduce_range == (not host_has_vnni() or platform.machine() != "x86_64")
    assert not int8_types(Mode.INT8_STATIC, Backend.CPU, "arm64").reduce_range
    arm = int8_types(Mode.INT8_DYNAMIC, Backend.CPU, "arm64")
    assert not arm.activation_signed and arm.weight_signed and not arm.reduce_range  # U8S8


def test_a_model_onnxruntime_cannot_load_is_a_quantization_error(tmp_path) -> None:
    """The child-process load check reports a refused model with onnxruntime's own reason, in one line."""
    import pytest

    from mlpk.packager.errors import QuantizationError

    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07 not a model")
    with pytest.raises(QuantizationError, match="onnxruntime cannot load bad.onnx"):
        gate.check_loads(bad)


def _ml_only_model(path) -> None:
    """A scikit-learn style graph: only ai.onnx.ml ops, which no quantizer has an INT8 or FP16 form of."""
    import onnx
    from onnx import TensorProto, helper

    node = helper.make_node("Scaler", ["x"], ["y"], domain="ai.onnx.ml", offset=[0.5, 0.5], scale=[2.0, 2.0])
    graph = helper.make_graph([node], "scaler", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3),
                                                    helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, str(path))


def test_a_model_with_nothing_to_quantize_is_refused_not_shipped_unchanged(tmp_path) -> None:
    """The quantizers return such a graph unchanged (or with Casts only); passing the gate trivially, it would be
    reported as quantized. The duplicate opset import (as skl2onnx writes) must not be what stops it."""
    import pytest

    from mlpk.packager.quantize import GateFailure, QuantizeOptions, quantize

    model = tmp_path / "scaler.onnx"
    _ml_only_model(model)
    np.savez(tmp_path / "data.npz", x=RNG.standard_normal((40, 2)).astype(np.float32))
    for mode in (Mode.INT8_DYNAMIC, Mode.INT8_STATIC, Mode.FP16):
        with pytest.raises(GateFailure, match="nothing was quantized: none of the model's ops has a") as err:
            quantize(model, QuantizeOptions(mode, calibration=tmp_path / "data.npz"), tmp_path / f"{mode}.onnx")
        assert "Scaler (ai.onnx.ml)" in err.value.message and len(err.value.trials) == 1, "no fallback can help"
        assert not (tmp_path / f"{mode}.onnx").exists()
