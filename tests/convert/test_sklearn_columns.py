"""scikit-learn ColumnTransformers over mixed columns (two string columns one-hot encoded, three numeric ones
scaled, then a LogisticRegression), fitted on a pandas DataFrame or on a numpy object array: one typed ONNX input
per column, named after the DataFrame's columns (or x0, x1, ... by position), and parity fed the same table the
source was fitted on. Real scikit-learn, skl2onnx and pandas; the models are fitted by the test."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import numpy as np
import pytest

from mlpk.packager.convert import ConvertOptions, convert

pytestmark = pytest.mark.sklearn

_STRINGS = ("color", "size")
_NUMBERS = ("width", "height", "weight")
_TYPED = [("color", "str"), ("size", "str"), ("width", "float32"), ("height", "float32"), ("weight", "float32")]


def _table(rows: int = 80):  # noqa: ANN202 - a DataFrame and its labels
    import pandas as pd

    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"color": rng.choice(["red", "green", "blue"], rows),
                          "size": rng.choice(["S", "M", "L"], rows),
                          **{name: rng.normal(size=rows) for name in _NUMBERS}})
    labels = ((frame["width"] + (frame["color"] == "red") - (frame["size"] == "S")) > 0.3).astype(int).to_numpy()
    return frame, labels


def _pipeline(strings, numbers, handle_unknown: str = "error"):  # noqa: ANN001, ANN202 - a Pipeline to fit
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    columns = ColumnTransformer([("categories", OneHotEncoder(handle_unknown=handle_unknown), list(strings)),
                                 ("numbers", StandardScaler(), list(numbers))])
    return Pipeline([("columns", columns), ("classify", LogisticRegression())])


def _typed(result) -> list[tuple[str, str]]:  # noqa: ANN001
    assert all(spec.shape == ("batch", 1) for spec in result.card.inputs), result.card.inputs
    return [(spec.name, spec.dtype) for spec in result.card.inputs]


def test_dataframe_column_transformer_converts_with_typed_inputs(tmp_path: Path) -> None:
    """Generated inputs: string columns get words the model never saw, which handle_unknown="ignore" encodes as
    zeros on both sides."""
    frame, labels = _table()
    joblib.dump(_pipeline(_STRINGS, _NUMBERS, "ignore").fit(frame, labels), tmp_path / "frame.joblib")
    result = convert(tmp_path / "frame.joblib", tmp_path / "out" / "frame.onnx",
                     options=ConvertOptions(trust_pickle=True))
    assert _typed(result) == _TYPED
    assert result.parity is not None and result.parity.passed, result.parity.summary()
    assert result.parity.outputs[0].agreement == 1.0
    assert result.notes[0] == ("one input per column, named after the DataFrame's columns (feature_names_in_): "
                               "color:str, size:str, width:float32, height:float32, weight:float32")


def test_dataframe_model_with_per_column_sample_data_through_the_cli(mlpack, tmp_path: Path) -> None:
    """handle_unknown="error" (the default) needs real categories: an .npz with one array per column gives them."""
    frame, labels = _table()
    joblib.dump(_pipeline(_STRINGS, _NUMBERS).fit(frame, labels), tmp_path / "frame.joblib")
    np.savez(tmp_path / "columns.npz", **{name: frame[name].to_numpy(dtype=str if name in _STRINGS else float)
                                          for name in frame.columns})
    done = mlpack("--json", "convert", "frame.joblib", "--trust-pickle", "--sample-data", "columns.npz",
                  "-o", str(tmp_path / "out" / "frame.onnx"))
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert [(i["name"], i["dtype"]) for i in result["card"]["inputs"]] == _TYPED
    assert result["parity"]["passed"] and result["parity"]["samples"] == len(frame)
    import onnxruntime as ort

    session = ort.InferenceSession(result["output"])
    feeds = {name: frame[[name]].to_numpy().astype(str if name in _STRINGS else np.float32) for name in frame.columns}
    model = joblib.load(tmp_path / "frame.joblib")
    np.testing.assert_allclose(session.run(["probabilities"], feeds)[0], model.predict_proba(frame), atol=1e-5)


def test_object_array_column_transformer_converts_by_position(tmp_path: Path) -> None:
    frame, labels = _table()
    table = frame.to_numpy(dtype=object)
    joblib.dump(_pipeline([0, 1], [2, 3, 4]).fit(table, labels), tmp_path / "array.joblib")
    np.savez(tmp_path / "columns.npz", **{f"x{i}": table[:, i].astype(str if i < 2 else float) for i in range(5)})
    result = convert(tmp_path / "array.joblib", tmp_path / "out" / "array.onnx",
                     options=ConvertOptions(trust_pickle=True), sample_data=tmp_path / "columns.npz")
    assert _typed(result) == [("x0", "str"), ("x1", "str"), ("x2", "float32"), ("x3", "float32"), ("x4", "float32")]
    assert result.parity is not None and result.parity.passed, result.parity.summary()
    assert result.parity.samples == len(frame) and result.parity.outputs[0].agreement == 1.0
    assert result.notes[0].startswith("one input per column, named after column positions: x0:str")


def test_encoder_over_string_array_takes_one_string_input(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame, labels = _table()
    strings = frame[list(_STRINGS)].to_numpy(dtype=str)
    joblib.dump(make_pipeline(OneHotEncoder(), LogisticRegression()).fit(strings, labels), tmp_path / "codes.joblib")
    np.savez(tmp_path / "codes.npz", input=strings)
    result = convert(tmp_path / "codes.joblib", tmp_path / "out" / "codes.onnx",
                     options=ConvertOptions(trust_pickle=True), sample_data=tmp_path / "codes.npz")
    assert [spec.render() for spec in result.card.inputs] == ["input: str[batch, 2]"]
    assert result.parity is not None and result.parity.passed and result.parity.outputs[0].agreement == 1.0


def test_generated_inputs_use_seen_categories(tmp_path: Path) -> None:
    """handle_unknown="error": ONNX Runtime's OneHotEncoder rejects unseen words (zeros = 0), so generated strings
    are drawn from the categories the graph's encoders hold (the signature's values)."""
    frame, labels = _table()
    joblib.dump(_pipeline(_STRINGS, _NUMBERS).fit(frame, labels), tmp_path / "frame.joblib")
    result = convert(tmp_path / "frame.joblib", tmp_path / "out" / "frame.onnx",
                     options=ConvertOptions(trust_pickle=True))
    assert result.parity is not None and result.parity.passed


def test_categories_never_seen_refuse_an_encoder_whose_onnx_form_fails_on_them(tmp_path: Path) -> None:
    """OneHotEncoder(handle_unknown="infrequent_if_exist"): scikit-learn answers a category it never saw (as its
    infrequent one); skl2onnx's OneHotEncoder fails on it, so the served model would answer an error where the user's
    model answers. Parity's made inputs hold only known categories; they now also hold one never seen, and the model
    is refused. With handle_unknown="ignore" both sides encode it as zeros, and parity says it checked."""
    from mlpk.packager.errors import ValidationError

    frame, labels = _table(400)
    frame.loc[frame.index[:6], "color"] = "violet"  # rare: below min_frequency, the infrequent category
    model = _pipeline(_STRINGS, _NUMBERS, "infrequent_if_exist")
    model.set_params(columns__categories__min_frequency=10)
    joblib.dump(model.fit(frame, labels), tmp_path / "rare.joblib")
    with pytest.raises(ValidationError, match=r"with categories never seen \(as real inputs may be\), the ONNX "
                                              r"model fails where the source answers"):
        convert(tmp_path / "rare.joblib", tmp_path / "out" / "rare.onnx", options=ConvertOptions(trust_pickle=True))
    joblib.dump(_pipeline(_STRINGS, _NUMBERS, "ignore").fit(frame, labels), tmp_path / "ignore.joblib")
    result = convert(tmp_path / "ignore.joblib", tmp_path / "out" / "ignore.onnx",
                     options=ConvertOptions(trust_pickle=True))
    assert any("categories never seen: answers agree" in note for note in result.notes)
