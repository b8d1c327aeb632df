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
    """Named like class scores: argmax agreement is the gated figure."""
    swapped = LOGITS.copy()
    rows = np.arange(20)
    top = LOGITS.argmax(1)[:20]
    swapped[rows, top] = LOGITS.min(1)[:20] - 1  # the top class of 20 rows falls to the bottom
    got = gate.compare({"logits": LOGITS}, {"logits": swapped}, None)
    assert got.argmax_agreement is not None and got.argmax_agreement <= 0.9
    assert math.isclose(got.drop, 1 - got.argmax_agreement) and got.drop_kind == "argmax" and not got.passes(0.01)


def test_an_ambiguous_2d_output_is_gated_on_argmax_and_cosine() -> None:
    """A 2-D float output that is not known to be class scores: both figures count, the worse one gates."""
    flipped = LOGITS.copy()
    flipped[:20] = -flipped[:20]
    got = gate.compare({"y": LOGITS}, {"y": flipped}, None)
    assert got.outputs[0].kind == "ambiguous" and got.drop_kind == "cosine" and got.drop == 1.0


def test_an_embedding_is_gated_on_the_worst_row_not_on_argmax() -> None:
    """A speaker embedding whose rows keep their largest component (argmax agrees) but turn by 45 degrees
    (cosine 0.7, the broken INT8 model of issue 13) fails; a near-identical one passes."""
    emb = np.abs(RNG.standard_normal((17, 64))) + 0.1
    emb[:, 0] = 10.0
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    noise = np.abs(RNG.standard_normal(emb.shape))
    noise[:, 0] = 0
    noise = noise / np.linalg.norm(noise, axis=1, keepdims=True)
    rest = emb - emb[:, :1] * np.eye(64)[0]
    turned = emb * 0.7 + noise * 0.7 * np.linalg.norm(emb, axis=1, keepdims=True)
    got = gate.compare({"embedding": emb}, {"embedding": turned}, None)
    assert got.outputs[0].kind == "values" and got.outputs[0].min_cosine is not None
    assert got.outputs[0].min_cosine < 0.95 and not got.passes(0.01)
    assert (emb.argmax(1) == turned.argmax(1)).all() and rest.shape == emb.shape
    close = gate.compare({"embedding": emb}, {"embedding": emb * (1 + 1e-4)}, None)
    assert close.passes(0.01) and close.drop_kind in ("cosine", "relative error")


def test_a_scale_error_fails_even_when_the_direction_is_kept() -> None:
    values = RNG.standard_normal((40, 8))
    got = gate.compare({"features": values}, {"features": values * 1.5}, None)
    assert got.drop_kind == "relative error" and not got.passes(0.01)


def test_outputs_of_different_shapes_per_feed_are_compared_row_by_row() -> None:
    """A detector fed images of several sizes: the runs' outputs cannot be concatenated; each is compared."""
    ref = [RNG.standard_normal((1, 5, 20)), RNG.standard_normal((1, 5, 30))]
    got = gate.compare({"boxes": ref}, {"boxes": [r.copy() for r in ref]}, None)
    assert got.passes(0.0) and got.samples == 2
    bad = gate.compare({"boxes": ref}, {"boxes": [ref[0], -ref[1]]}, None)
    assert not bad.passes(0.5)


def test_labels_make_the_drop_an_accuracy_drop() -> None:
    labels = LOGITS.argmax(1)
    noisy = LOGITS + RNG.standard_normal(LOGITS.shape).astype(np.float32) * 0.5
    got = gate.compare({"logits": LOGITS}, {"logits": noisy}, labels)
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
    assert got.drop_kind in ("cosine", "relative error") and got.drop < 1e-6 and got.max_abs_error > 0


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


def test_regression_targets_are_no_class_labels() -> None:
    """A regression of 3 outputs with its targets as `y` in the data: the targets are no class ids, so no
    'accuracy' of 0% -> 0% stands in for the figures (which let a model whose two small outputs were ruined pass)."""
    values = np.abs(RNG.standard_normal((40, 3))) * np.array([100.0, 10.0, 100000.0])
    ruined = values.copy()
    ruined[:, :2] = 0.0  # the small-scale outputs gone, the large one kept
    targets = values * 1.01
    got = gate.compare({"y": values}, {"y": ruined}, targets)
    assert got.accuracy_before is None and got.drop_kind == "column relative error" and not got.passes(0.01)
    whole_numbers = gate.compare({"y": values}, {"y": values.copy()}, np.arange(40) % 3)
    assert whole_numbers.accuracy_before is not None  # class ids still count


def test_a_small_output_beside_a_large_one_is_judged_on_its_own_scale() -> None:
    """Per row, the error of the column of scale 1,000 hides the one of scale 1: the worst column counts too."""
    values = np.column_stack([RNG.standard_normal(50), 1000.0 + RNG.standard_normal(50)])
    off = values.copy()
    off[:, 0] *= 1.3
    got = gate.compare({"out": values}, {"out": off}, None)
    assert got.outputs[0].max_rel_error is not None and got.outputs[0].max_rel_error < 0.01
    assert got.outputs[0].max_column_error is not None and got.outputs[0].max_column_error > 0.29
    assert got.drop_kind == "column relative error" and not got.passes(0.01)
    wide = RNG.standard_normal((50, 128))  # an embedding: rows are directions, no column verdict
    assert gate.compare({"embedding": wide}, {"embedding": wide}, None).outputs[0].max_column_error is None
