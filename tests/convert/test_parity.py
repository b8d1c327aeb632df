"""The parity figures and gate (pure numpy), and the gate through the convert pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mlpk.packager.errors import ConfigError, ValidationError
from mlpk.packager.parity import DEFAULT_TOLERANCE, Tolerance, compare, compare_output


def test_figures_for_scores() -> None:
    want = np.array([[0.1, 0.9], [0.8, 0.2]], np.float32)
    got = want + np.array([[0.0, 2e-5], [-1e-5, 0.0]], np.float32)
    out = compare_output("p", got, want, Tolerance(atol=1e-4, rtol=0))
    assert out.max_abs == pytest.approx(2e-5, rel=1e-2)
    assert out.max_rel == pytest.approx(2e-5 / 0.9, rel=1e-2)
    assert out.cosine == pytest.approx(1.0, abs=1e-6)
    assert out.agreement == 1.0 and out.passed


def test_flipped_argmax_fails_even_within_atol() -> None:
    """Every element within atol, yet the decided label (margin 0.2 > atol 0.16) flips: the gate fails on agreement."""
    want = np.array([[0.6, 0.4]], np.float32)
    got = np.array([[0.45, 0.55]], np.float32)
    out = compare_output("p", got, want, Tolerance(atol=0.16, rtol=0))
    assert out.max_abs == pytest.approx(0.15, rel=1e-5) and out.agreement == 0.0 and not out.passed
    assert compare_output("p", got, want, Tolerance(atol=0.16, rtol=0, agreement=0.0)).passed


def test_ties_within_tolerance_are_not_disagreements() -> None:
    want = np.array([[0.3, 0.3 + 1e-7, 0.1], [0.9, 0.05, 0.05]], np.float32)
    got = np.array([[0.3 + 1e-7, 0.3, 0.1], [0.9, 0.05, 0.05]], np.float32)
    assert compare_output("y", got, want, Tolerance(atol=1e-4, rtol=0)).agreement == 1.0


def test_labels_and_strings() -> None:
    labels = compare_output("label", np.array([1, 2, 3]), np.array([1, 2, 4]), Tolerance())
    assert labels.agreement == pytest.approx(2 / 3) and not labels.passed
    words = compare_output("w", np.array(["a", "b"]), np.array(["a", "b"], dtype=object), Tolerance())
    assert words.passed and words.max_abs == 0


def test_nan_and_infinity_match_only_themselves() -> None:
    """A NaN both sides give (a model that passes a missing value through), or the same infinity, is a match and
    the figures are over the rest; a NaN or infinity against a number, or against the other infinity, fails
    whatever the tolerance, and the error says so instead of suggesting a wider --tolerance."""
    want = np.array([[0.5, np.nan, np.inf], [0.25, 1.0, -np.inf]], np.float32)
    same = compare_output("y", want + np.float32(1e-6), want, Tolerance(atol=1e-4, rtol=0))
    assert same.passed and same.non_finite == 0 and same.max_abs == pytest.approx(1e-6, rel=0.05)
    loose = Tolerance(atol=1e9, rtol=1e9, agreement=0.0)
    for got in (np.where(np.isnan(want), 0.5, want), np.where(want == np.inf, -np.inf, want),
                np.where(want == 0.25, np.nan, want)):
        out = compare_output("y", got.astype(np.float32), want, loose)
        assert not out.passed and out.non_finite == 1, got
    report = compare({"y": np.array([1.0, np.nan])}, {"y": np.array([1.0, 2.0])}, Tolerance(), samples=1,
                     inputs_from="x")
    with pytest.raises(ValidationError, match="NaN/inf where the other is not: 1 values") as err:
        report.check("m.onnx")
    assert "--tolerance" in (err.value.hint or "") and "no --tolerance accepts" in (err.value.hint or "")


def test_shape_mismatch_is_a_validation_error() -> None:
    with pytest.raises(ValidationError, match="ONNX gives shape"):
        compare_output("y", np.zeros((2, 3)), np.zeros((3, 3)), Tolerance())


def test_report_matches_by_name_then_position() -> None:
    onnx_out = {"a": np.ones(3, np.float32), "b": np.zeros(3, np.float32)}
    by_name = compare(onnx_out, {"b": np.zeros(3), "a": np.ones(3)}, Tolerance(), samples=3, inputs_from="x")
    assert by_name.passed
    by_position = compare(onnx_out, [np.ones(3), np.ones(3)], Tolerance(), samples=3, inputs_from="x")
    assert not by_position.passed
    with pytest.raises(ValidationError, match=r"b: max_abs=1 .* FAIL"):
        by_position.check("m.onnx")


def test_tolerance_text() -> None:
    assert DEFAULT_TOLERANCE["keras"].updated("atol=1e-3, agreement=0.99") == Tolerance(1e-3, 1e-3, 0.99)
    for bad in ("atol", "speed=1", "atol=-1", "agreement=2"):
        with pytest.raises(ConfigError):
            Tolerance().updated(bad)


@pytest.mark.sklearn
def test_gate_fails_beyond_tolerance_and_writes_nothing(sklearn_models: Path, tmp_path: Path) -> None:
    """scikit-learn computes in float64, the ONNX model in float32: a zero tolerance must fail, with the table."""
    from mlpk.packager.convert import ConvertOptions, convert

    source = sklearn_models / "breast_cancer.joblib"
    with pytest.raises(ValidationError, match=r"beyond tolerance.*probabilities: max_abs=\S+ .*FAIL"):
        convert(source, tmp_path / "out" / "m.onnx", options=ConvertOptions(trust_pickle=True),
                sample_data=sklearn_models / "breast_cancer_test.npz", tolerance="atol=0,rtol=0")
    assert not any((tmp_path / "out").rglob("*"))


def test_onnx_outputs_without_source_counterpart_are_listed() -> None:
    report = compare({"a": np.ones(2), "extra": np.zeros(2)}, [np.ones(2)], Tolerance(), samples=2, inputs_from="x")
    assert report.passed and report.unchecked == ("extra",) and report.to_dict()["unchecked"] == ["extra"]


def test_hints_never_suggest_a_looser_tolerance_for_other_decisions() -> None:
    """Labels that differ are no rounding: the hint says how often, and that --tolerance would ship it anyway. Float64
    samples the ONNX model took as float32 get the flag that keeps float64."""
    report = compare({"label": np.array([0, 1, 1, 2])}, [np.array([0, 1, 2, 2])], Tolerance(), samples=4,
                     inputs_from="x")
    with pytest.raises(ValidationError) as refused:
        report.check("m.joblib")
    assert "decides differently from the source on 25.0% of the samples ('label')" in refused.value.hint
    assert "a looser --tolerance would ship" in refused.value.hint
    with pytest.raises(ValidationError) as narrowed:
        report.check("m.joblib", ["input"])
    assert narrowed.value.hint.startswith("the samples of input are float64")
    assert "--input NAME:SHAPE:float64" in narrowed.value.hint


def test_values_that_point_elsewhere_get_no_tolerance_hint() -> None:
    """Values far apart (cosine 0.78, as a transformer's padded positions) are no rounding either; the last bits of
    float32 still get the --tolerance way out."""
    rng = np.random.default_rng(0)
    want = rng.standard_normal((8, 12, 16)).astype(np.float32)  # [batch, seq, hidden]: no class scores
    apart = want.copy()
    apart[:, 8:] = rng.standard_normal((8, 4, 16))
    report = compare({"hidden": apart}, [want], Tolerance(), samples=8, inputs_from="x")
    with pytest.raises(ValidationError) as refused:
        report.check("m.pt")
    assert "computes something else than the source ('hidden': cosine 0." in refused.value.hint
    assert "a looser --tolerance would ship" in refused.value.hint and "if the difference is acceptable" not in \
        refused.value.hint
    with pytest.raises(ValidationError) as narrowed:
        report.check("m.joblib", ["input"])
    assert "if the model still differs in float64, it computes something else" in narrowed.value.hint
    rounding = compare({"hidden": want * (1 + 2e-3)}, [want], Tolerance(), samples=8, inputs_from="x")
    with pytest.raises(ValidationError) as close:
        rounding.check("m.pt")
    assert "raise the bound explicitly with --tolerance" in close.value.hint


def test_the_same_values_laid_out_otherwise_are_refused() -> None:
    """A time-major GRU whose export kept the traced length in a Reshape returns [2, 24, 5] for the source's
    [12, 4, 5]: as many values, in the same order, so compared flat they agree while out[t] is not step t. Only axes
    of size 1 may differ ([n] and [n, 1] hold the same values)."""
    steps = np.arange(12 * 4 * 5, dtype=np.float32).reshape(12, 4, 5)
    with pytest.raises(ValidationError, match=r"ONNX gives shape \[2, 24, 5\], the source \[12, 4, 5\]: the same "
                                              r"values laid out otherwise") as refused:
        compare_output("output", steps.reshape(2, 24, 5), steps, Tolerance())
    assert "--input NAME:SHAPE:DTYPE" in refused.value.hint
    assert compare_output("label", np.arange(4).reshape(4, 1), np.arange(4), Tolerance()).passed
    assert compare_output("y", steps.reshape(1, 12, 4, 5), steps, Tolerance()).passed


def test_labels_of_tied_rows_agree_whichever_class_they_name() -> None:
    """A forest of 100 trees voting 50/50: scikit-learn names the first class, onnxruntime's sum of votes
    (0.49999994 against 0.50000006) the other. Either is a faithful label for that row; a row that is not tied is
    not excused."""
    probabilities = np.array([[0.5, 0.5], [0.9, 0.1], [0.2, 0.8]])
    onnx_probabilities = np.array([[0.49999994, 0.50000006], [0.9, 0.1], [0.2, 0.8]], dtype=np.float32)
    report = compare({"label": np.array([1, 0, 1]), "probabilities": onnx_probabilities},
                     [np.array([0, 0, 1]), probabilities], Tolerance(), samples=3, inputs_from="x")
    assert report.passed and report.outputs[0].agreement == 1.0
    strings = compare({"label": np.array(["b", "a", "b"], dtype=object), "probabilities": onnx_probabilities},
                      [np.array(["a", "a", "b"]), probabilities], Tolerance(), samples=3, inputs_from="x")
    assert strings.passed
    untied = compare({"label": np.array([0, 1, 1]), "probabilities": onnx_probabilities},
                     [np.array([0, 0, 1]), probabilities], Tolerance(), samples=3, inputs_from="x")
    assert not untied.passed and untied.outputs[0].agreement == pytest.approx(2 / 3)
