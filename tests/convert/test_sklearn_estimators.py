"""scikit-learn beyond the samples: bare estimators of each kind convert with plain tensor outputs and pass parity
(probabilistic and margin classifiers, a forest, a regressor, a transformer)."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest

from mlpk.packager.convert import ConvertOptions, convert


def _estimator(name: str):  # noqa: ANN202 - a fitted scikit-learn estimator and its data
    from sklearn.datasets import load_diabetes, load_iris
    from sklearn.decomposition import PCA
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import Ridge
    from sklearn.svm import SVC, LinearSVC

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    if name == "ridge":
        xd, yd = load_diabetes(return_X_y=True)
        return Ridge().fit(xd, yd), xd.astype(np.float32)
    return {"linear_svc": LinearSVC(random_state=0), "svc": SVC(), "forest": RandomForestClassifier(10, random_state=0),
            "pca": PCA(2)}[name].fit(x, y), x


@pytest.mark.sklearn
@pytest.mark.parametrize("name", ["linear_svc", "svc", "forest", "ridge", "pca"])
def test_estimator_kinds_convert(tmp_path: Path, name: str) -> None:
    model, x = _estimator(name)
    joblib.dump(model, tmp_path / f"{name}.joblib")
    np.savez(tmp_path / "data.npz", input=x)
    result = convert(tmp_path / f"{name}.joblib", tmp_path / "out" / f"{name}.onnx",
                     options=ConvertOptions(trust_pickle=True), sample_data=tmp_path / "data.npz")
    assert result.parity is not None and result.parity.passed and not result.parity.unchecked
    assert all(o.max_abs <= 1e-4 for o in result.parity.outputs), result.parity.summary()
    assert all(not o.dtype.startswith("seq") for o in result.card.outputs)  # tensors, never ZipMap sequences
    if name in ("linear_svc", "svc", "forest"):
        assert result.parity.outputs[0].agreement == 1.0


@pytest.mark.sklearn
@pytest.mark.parametrize("kind", ["SVC", "NuSVC"])
def test_binary_svm_scores_are_in_class_order(tmp_path: Path, kind: str) -> None:
    """skl2onnx's SVMClassifier gives a binary SVM's scores as [d, -d], whose argmax is the other class than its
    label (parity refused it, with a hint to loosen --tolerance); mlpack negates them into class order."""
    import onnxruntime as ort
    from sklearn import svm
    from sklearn.datasets import load_breast_cancer

    x, y = load_breast_cancer(return_X_y=True)
    model = getattr(svm, kind)().fit(x[:400], y[:400])
    joblib.dump(model, tmp_path / "svm.joblib")
    result = convert(tmp_path / "svm.joblib", tmp_path / "out" / "svm.onnx", options=ConvertOptions(trust_pickle=True))
    assert result.parity is not None and result.parity.passed
    assert any("columns in class order" in note for note in result.notes)
    label, scores = ort.InferenceSession(str(result.output)).run(None, {"input": x[400:].astype(np.float32)})
    assert (scores.argmax(axis=1) == label).all() and (label == model.predict(x[400:])).mean() > 0.99
    np.testing.assert_allclose(scores[:, 1], model.decision_function(x[400:]), atol=1e-3)


@pytest.mark.parametrize("kind", ["scaled-binary", "text-3-classes"])
def test_linear_svc_in_a_pipeline_converts(tmp_path: Path, kind: str) -> None:
    """A LinearSVC as a pipeline's last step (TfidfVectorizer + LinearSVC, the usual text classifier): skl2onnx's
    pipeline parser asked it for a ZipMap option it lacks (NameError), and the conversion was refused. Binary, its
    one score column becomes [-d, d], a column per class. Labels and scores as scikit-learn on held-out inputs."""
    import onnxruntime as ort
    from sklearn.datasets import load_breast_cancer
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import LinearSVC

    if kind == "scaled-binary":
        x, y = load_breast_cancer(return_X_y=True)
        model, held_out = make_pipeline(StandardScaler(), LinearSVC(random_state=0)).fit(x[:400], y[:400]), x[400:]
        feed = held_out.astype(np.float32)
    else:
        docs = ["good movie great plot", "bad movie awful plot", "a film about cats", "great film", "awful acting",
                "cats and dogs film", "the plot was good", "terrible bad acting", "a documentary on dogs"] * 3
        labels = [1, 0, 2, 1, 0, 2, 1, 0, 2] * 3
        model = make_pipeline(TfidfVectorizer(), LinearSVC(random_state=0)).fit(docs, labels)
        held_out = ["a great plot", "awful film", "dogs", "good acting and a bad plot"]
        feed = np.array(held_out, dtype=object).reshape(-1, 1)
    joblib.dump(model, tmp_path / "m.joblib")
    result = convert(tmp_path / "m.joblib", tmp_path / "out" / "m.onnx", options=ConvertOptions(trust_pickle=True))
    assert result.parity is not None and result.parity.passed
    label, scores = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"]).run(
        None, {"input": feed})
    assert label.tolist() == model.predict(held_out).tolist()
    margins = model.decision_function(held_out)
    np.testing.assert_allclose(scores, np.stack([-margins, margins], axis=1) if margins.ndim == 1 else margins,
                               atol=1e-4)
