"""scikit-learn models that take missing values (NaN): trees and forests (scikit-learn 1.3+ learns which child a NaN
goes to, `missing_go_to_left`), histogram boosting, imputers. skl2onnx sent every NaN to the right; mlpack routes it
as scikit-learn does, and parity without samples runs on rows with NaN whenever the source takes them, so a model
that sends NaN elsewhere is refused, not written."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest

from mlpk.packager.convert import ConvertOptions, convert
from mlpk.packager.convert import from_sklearn
from mlpk.packager.errors import ValidationError

pytestmark = pytest.mark.sklearn


def _data(regression: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """breast_cancer (or diabetes) with a tenth of the values missing, split 70/30."""
    from sklearn.datasets import load_breast_cancer, load_diabetes

    x, y = load_diabetes(return_X_y=True) if regression else load_breast_cancer(return_X_y=True)
    x = x.copy()
    x[np.random.default_rng(0).random(x.shape) < 0.1] = np.nan
    cut = int(len(x) * 0.7)
    return x[:cut], y[:cut], x[cut:], y[cut:]


def _model(kind: str) -> tuple[Any, np.ndarray]:
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    x, y, held_out, _ = _data(regression=kind == "tree-regressor")
    model = {"tree": DecisionTreeClassifier(max_depth=6, random_state=0),
             "forest": RandomForestClassifier(30, random_state=0),
             "tree-regressor": DecisionTreeRegressor(max_depth=6, random_state=0)}[kind]
    return model.fit(x, y), held_out


@pytest.mark.parametrize("kind", ["tree", "forest", "tree-regressor"])
def test_trees_fitted_with_missing_values_answer_as_scikit_learn(tmp_path: Path, kind: str) -> None:
    """Checked on held-out rows, two in three with a NaN or more, that parity never saw (skl2onnx's routing: 32 of 171 labels of
    the tree otherwise)."""
    import onnxruntime as ort

    model, held_out = _model(kind)
    joblib.dump(model, tmp_path / "m.joblib")
    result = convert(tmp_path / "m.joblib", tmp_path / "out" / "m.onnx", options=ConvertOptions(trust_pickle=True))
    assert result.parity is not None and result.parity.passed
    assert "missing values (NaN)" in result.parity.inputs_from
    assert any("splits send missing values (NaN) where scikit-learn sends them" in note for note in result.notes)
    session = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"])
    answers = session.run(None, {"input": held_out.astype(np.float32)})
    assert np.isnan(held_out).any(axis=1).mean() > 0.6
    if kind == "tree-regressor":
        np.testing.assert_allclose(answers[0].ravel(), model.predict(held_out), rtol=1e-5)
    else:
        assert answers[0].tolist() == model.predict(held_out).tolist()
        np.testing.assert_allclose(answers[1], model.predict_proba(held_out), atol=1e-5)


def test_parity_on_missing_values_refuses_trees_that_send_them_elsewhere(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """With skl2onnx's routing back (every NaN to the right), the rows with NaN parity makes refuse the model."""
    monkeypatch.setattr(from_sklearn, "_trees_as_fitted", lambda model, proto: None)
    model, _ = _model("tree")
    joblib.dump(model, tmp_path / "m.joblib")
    with pytest.raises(ValidationError, match="missing values"):
        convert(tmp_path / "m.joblib", tmp_path / "out" / "m.onnx", options=ConvertOptions(trust_pickle=True))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_model_that_refuses_nan_is_checked_without_it(tmp_path: Path) -> None:
    """A scaler and a logistic regression raise on NaN: parity runs on the ranges alone, and passes."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y, _, _ = _data()
    keep = ~np.isnan(x).any(axis=1)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x[keep], y[keep])
    joblib.dump(model, tmp_path / "m.joblib")
    result = convert(tmp_path / "m.joblib", tmp_path / "out" / "m.onnx", options=ConvertOptions(trust_pickle=True))
    assert result.parity is not None and result.parity.passed
    assert "ranges the model saw" in result.parity.inputs_from and "NaN" not in result.parity.inputs_from


def test_trees_fitted_with_missing_values_take_float64_inputs(tmp_path: Path) -> None:
    """A split that sends only missing values one way has an infinite threshold, on which skl2onnx's search for the
    float64 switch point never ended: `--input NAME:SHAPE:float64` hung. It converts, and answers as scikit-learn on
    held-out float64 rows with NaN."""
    import onnxruntime as ort

    from mlpk.packager.convert.specs import parse_input

    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_breast_cancer(return_X_y=True)
    train, held_out, labels, _ = train_test_split(x, y, test_size=0.3, random_state=0)
    for part, seed in ((train, 0), (held_out, 1)):
        part[np.random.default_rng(seed).random(part.shape) < 0.1] = np.nan
    model = DecisionTreeClassifier(random_state=0).fit(train, labels)
    assert np.isinf(model.tree_.threshold).any()  # the split the search hung on
    joblib.dump(model, tmp_path / "m.joblib")
    options = ConvertOptions(trust_pickle=True, inputs=(parse_input(f"input:batch,{held_out.shape[1]}:float64"),))
    result = convert(tmp_path / "m.joblib", tmp_path / "out" / "m.onnx", options=options)
    label, probabilities = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"]).run(
        None, {"input": held_out})
    assert label.tolist() == model.predict(held_out).tolist()
    np.testing.assert_allclose(probabilities, model.predict_proba(held_out), atol=1e-6)
