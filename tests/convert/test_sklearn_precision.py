"""scikit-learn models whose real inputs N(0, 1) data never shows: text beyond ASCII, float64 values that float32
cannot hold (timestamps, features that differ in the sixth decimal). Without samples, parity runs on inputs made from
what the fitted model knows (its vocabulary, the ranges its scalers and splits saw); with float64 samples, the source
computes on them as they are. Either way a model that answers otherwise than scikit-learn is refused, not written."""

from __future__ import annotations

from pathlib import Path

import joblib
import numpy as np
import pytest

from mlpk.packager.convert import ConvertOptions, convert
from mlpk.packager.convert import from_sklearn
from mlpk.packager.convert.specs import parse_input
from mlpk.packager.errors import ValidationError

pytestmark = pytest.mark.sklearn

_DOCS = ["the cat sat on the mat", "dogs are great pets", "le café est très bon", "Straße und Größe",
         "naïve résumé of the cat", "great dogs", "mat cat", "très très bon café", "Ωραία μέρα",
         "東京 日本語 テキスト", "a b c x y"] * 4
_HELD_OUT = ["CAFÉ TRÈS BON", "größe STRASSE straße", "a cat", "x y", "été e\u0301te", "Ωmega ωmega",
             "dogs_are great-pets", "", "numbers 42 ½ x²"]


def _text_model(kind: str):  # noqa: ANN202 - a fitted pipeline
    from sklearn.feature_extraction.text import CountVectorizer, TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import MultinomialNB
    from sklearn.pipeline import make_pipeline

    labels = np.array([0, 1, 0, 1, 0, 1, 0, 0, 1, 0, 1] * 4)
    model = make_pipeline(TfidfVectorizer(), LogisticRegression()) if kind == "tfidf" else \
        make_pipeline(CountVectorizer(ngram_range=(1, 2)), MultinomialNB())
    return model.fit(_DOCS, labels)


@pytest.mark.parametrize("kind", ["tfidf", "count-bigrams"])
def test_text_beyond_ascii_answers_as_scikit_learn(tmp_path: Path, kind: str) -> None:
    """skl2onnx reads the default token pattern as [a-zA-Z0-9_]+ ("café" -> "caf", and one-letter tokens that change
    bigrams); mlpack gives the Tokenizer the Unicode pattern. Checked on documents parity never saw."""
    import onnxruntime as ort

    model = _text_model(kind)
    joblib.dump(model, tmp_path / "text.joblib")
    result = convert(tmp_path / "text.joblib", tmp_path / "out" / "text.onnx",
                     options=ConvertOptions(trust_pickle=True))
    assert result.parity is not None and result.parity.passed
    assert "made from the vocabulary" in result.parity.inputs_from
    assert result.evidence is not None and result.evidence.synthetic  # made, not the user's: auto-quantize says so
    session = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"])
    docs = _DOCS[:11] + _HELD_OUT
    label, probabilities = session.run(None, {"input": np.array(docs, dtype=object).reshape(-1, 1)})
    assert label.tolist() == model.predict(docs).tolist()
    np.testing.assert_allclose(probabilities, model.predict_proba(docs), atol=1e-5)


def test_parity_on_the_vocabulary_refuses_an_ascii_tokenizer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the Unicode pattern (skl2onnx's own reading), the documents parity makes from the vocabulary show the
    difference, and nothing is written."""
    monkeypatch.setattr(from_sklearn, "_TOKEN_PATTERNS", {})
    joblib.dump(_text_model("tfidf"), tmp_path / "text.joblib")
    with pytest.raises(ValidationError, match="made from the vocabulary"):
        convert(tmp_path / "text.joblib", tmp_path / "out" / "text.onnx", options=ConvertOptions(trust_pickle=True))
    assert not (tmp_path / "out" / "text.onnx").exists()


def _timestamps():  # noqa: ANN202 - (fitted pipeline, float64 rows)
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(1)
    t = 1.7e9 + rng.uniform(0, 3600, 2000)  # Unix times within an hour: float32 rounds them to 128 s
    temperature = rng.normal(20, 5, 2000)
    x = np.column_stack([t, temperature])
    y = ((t - 1.7e9) / 3600 + (temperature - 20) / 10 + rng.normal(0, 0.2, 2000) > 0.5).astype(int)
    return make_pipeline(StandardScaler(), LogisticRegression()).fit(x, y), x


def test_float64_samples_are_the_source_s_input_as_given(tmp_path: Path) -> None:
    """The source runs on the user's float64 samples, not on them rounded to float32 (which hid an error of 0.04 in
    probabilities and flipped labels); the refusal names --input ...:float64, and with it the model passes."""
    model, x = _timestamps()
    joblib.dump(model, tmp_path / "ts.joblib")
    np.savez(tmp_path / "samples.npz", input=x[:64])
    with pytest.raises(ValidationError) as refused:
        convert(tmp_path / "ts.joblib", tmp_path / "out" / "ts.onnx", options=ConvertOptions(trust_pickle=True),
                sample_data=tmp_path / "samples.npz")
    assert "float64" in refused.value.hint and "--input NAME:SHAPE:float64" in refused.value.hint
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
    result = convert(tmp_path / "ts.joblib", tmp_path / "out" / "ts.onnx", sample_data=tmp_path / "samples.npz",
                     options=ConvertOptions(trust_pickle=True, inputs=(parse_input("input:batch,2:float64"),)))
    assert result.parity is not None and result.parity.passed
    assert result.parity.outputs[1].max_abs < 1e-9


def test_without_samples_parity_covers_the_ranges_the_model_saw(tmp_path: Path) -> None:
    """No --sample-data: the inputs are drawn (in float64) across the StandardScaler's mean +- 3 scale, where the
    timestamps live, so the float32 model is refused; standard-normal inputs had passed it."""
    model, _ = _timestamps()
    joblib.dump(model, tmp_path / "ts.joblib")
    with pytest.raises(ValidationError, match=r"ranges the model saw \(StandardScaler mean_ and scale_\)"):
        convert(tmp_path / "ts.joblib", tmp_path / "out" / "ts.onnx", options=ConvertOptions(trust_pickle=True))


def test_histogram_boosting_near_its_thresholds_is_refused(tmp_path: Path) -> None:
    """Features that differ in the sixth decimal around 1000: HistGradientBoosting bins them in float64, and float32
    cannot tell them apart. Parity on values across its bin thresholds sees the labels change."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(1)
    x = 1000.0 + rng.integers(0, 200, (2000, 2)) * 1e-6
    model = HistGradientBoostingClassifier(max_iter=20).fit(x, (x[:, 0] > 1000.0001).astype(int))
    joblib.dump(model, tmp_path / "hgb.joblib")
    with pytest.raises(ValidationError, match="HistGradientBoostingClassifier bin thresholds") as refused:
        convert(tmp_path / "hgb.joblib", tmp_path / "out" / "hgb.onnx", options=ConvertOptions(trust_pickle=True))
    assert "float64" in refused.value.hint


@pytest.mark.parametrize("kind", ["scaler", "forest", "hgb", "knn", "svc", "naive-bayes"])
def test_ordinary_models_pass_on_the_ranges_they_saw(tmp_path: Path, kind: str) -> None:
    """Data of everyday scale converts as before; the parity inputs come from the fitted model's own record, in the
    range of the training data (wine: features from 0.1 to 1,680)."""
    from sklearn.datasets import load_wine
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC

    x, y = load_wine(return_X_y=True)
    model = {"scaler": make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)),
             "forest": RandomForestClassifier(10, random_state=0), "hgb": HistGradientBoostingClassifier(max_iter=10),
             "knn": KNeighborsClassifier(), "svc": SVC(),
             "naive-bayes": GaussianNB()}[kind].fit(x, y)
    joblib.dump(model, tmp_path / "m.joblib")
    result = convert(tmp_path / "m.joblib", tmp_path / "out" / "m.onnx", options=ConvertOptions(trust_pickle=True))
    assert result.parity is not None and result.parity.passed, result.parity
    assert "ranges the model saw" in result.parity.inputs_from
    takes_nan = kind in ("forest", "hgb")  # and rows with NaN, one per column (wine: 13), where the model takes it
    assert ("missing values (NaN)" in result.parity.inputs_from) == takes_nan
    assert result.parity.samples == from_sklearn.EXAMPLE_ROWS + (x.shape[1] if takes_nan else 0)
    made = result.evidence.inputs["input"] if result.evidence is not None else None
    assert made is not None and made.dtype == np.float32
    assert np.nanmax(made) > 100  # the scale of the wine data, which standard-normal inputs never reach


def test_a_setting_skl2onnx_cannot_express_is_named_as_such(tmp_path: Path) -> None:
    """analyzer='char_wb' has no ONNX form in skl2onnx: the hint says to change that setting, not --input."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from mlpk.packager.errors import ConversionError

    model = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 3)), LogisticRegression())
    joblib.dump(model.fit(_DOCS, [0, 1] * 22), tmp_path / "chars.joblib")
    with pytest.raises(ConversionError, match="only tokenizer='word'") as refused:
        convert(tmp_path / "chars.joblib", tmp_path / "out" / "chars.onnx", options=ConvertOptions(trust_pickle=True))
    assert "no ONNX form for a setting" in refused.value.hint and "--input" not in refused.value.hint


@pytest.mark.parametrize("kind", ["hgb-regressor", "scaler-forest", "gradient-boosting"])
def test_trees_take_float64_inputs_exactly(tmp_path: Path, kind: str) -> None:
    """The float64 way out the refusal names (--input NAME:SHAPE:float64) for trees: histogram boosting and
    gradient boosting classifiers did not load (skl2onnx declared float64 scores, which ai.onnx.ml's tree ops do not
    give), and every tree compared float64 inputs with float32 thresholds (a StandardScaler and RandomForest: 9 of
    54 held-out wine rows apart; the boosting: 3 of 133 diabetes rows, up to 5.2). All now answer as scikit-learn
    on held-out float64 rows."""
    import onnxruntime as ort
    from sklearn.datasets import load_diabetes, load_wine
    from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingRegressor, RandomForestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_diabetes(return_X_y=True) if kind == "hgb-regressor" else load_wine(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(x))
    train, held_out = order[: len(x) * 7 // 10], order[len(x) * 7 // 10:]
    model = {"hgb-regressor": HistGradientBoostingRegressor(max_iter=50, random_state=0),
             "scaler-forest": make_pipeline(StandardScaler(), RandomForestClassifier(100, random_state=0)),
             "gradient-boosting": GradientBoostingClassifier(n_estimators=30, random_state=0)}[kind]
    model.fit(x[train], y[train])
    joblib.dump(model, tmp_path / "m.joblib")
    spec = parse_input(f"input:batch,{x.shape[1]}:float64")
    result = convert(tmp_path / "m.joblib", tmp_path / "out" / "m.onnx",
                     options=ConvertOptions(trust_pickle=True, inputs=(spec,)))
    assert any("trees compare float64 inputs with float64 thresholds" in note for note in result.notes)
    answers = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"]).run(
        None, {"input": x[held_out]})
    if kind == "hgb-regressor":
        np.testing.assert_allclose(answers[0].ravel(), model.predict(x[held_out]), rtol=1e-5)
    else:
        assert answers[0].tolist() == model.predict(x[held_out]).tolist()
        np.testing.assert_allclose(answers[1], model.predict_proba(x[held_out]), atol=1e-6)


def test_histogram_boosting_sends_a_float32_input_on_its_threshold_as_scikit_learn(tmp_path: Path) -> None:
    """Histogram boosting compares float64 inputs with float64 thresholds; skl2onnx stored each as the nearest
    float32, above it for about half of them, so a float32 input equal to that float32 went left where scikit-learn
    sends it right. Probed at every such threshold of the fitted model: the ONNX model answers as scikit-learn."""
    import onnxruntime as ort
    from sklearn.ensemble import HistGradientBoostingRegressor

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 4))
    model = HistGradientBoostingRegressor(max_iter=30, random_state=0).fit(x, x[:, 0] * 3 + np.sin(x[:, 1] * 2))
    joblib.dump(model, tmp_path / "m.joblib")
    result = convert(tmp_path / "m.joblib", tmp_path / "out" / "m.onnx", options=ConvertOptions(trust_pickle=True))
    probes = []
    for column, thresholds in enumerate(model._bin_mapper.bin_thresholds_):
        above = thresholds[thresholds.astype(np.float32).astype(np.float64) > thresholds].astype(np.float32)
        rows = np.zeros((len(above), 4), np.float32)
        rows[:, column] = above
        probes.append(rows)
    probe = np.concatenate(probes)
    assert len(probe) > 100
    got = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"]).run(None, {"input": probe})[0]
    np.testing.assert_allclose(got.ravel(), model.predict(probe.astype(np.float64)), rtol=1e-5, atol=1e-5)


def test_a_float64_form_onnxruntime_cannot_load_says_so(tmp_path: Path) -> None:
    """AdaBoostClassifier with float64 inputs: skl2onnx's model mixes float32 tree scores and float64 weights in a
    Where, and onnxruntime refuses to load it; the hint said another --opset might help."""
    from sklearn.datasets import load_iris
    from sklearn.ensemble import AdaBoostClassifier

    from mlpk.packager.errors import ConversionError

    x, y = load_iris(return_X_y=True)
    joblib.dump(AdaBoostClassifier(n_estimators=10, random_state=0).fit(x, y), tmp_path / "m.joblib")
    options = ConvertOptions(trust_pickle=True, inputs=(parse_input("input:batch,4:float64"),))
    with pytest.raises(ConversionError, match="cannot load the converted model") as refused:
        convert(tmp_path / "m.joblib", tmp_path / "out" / "m.onnx", options=options)
    assert "float32 only: convert with float32 inputs" in refused.value.hint and "--opset" not in refused.value.hint
