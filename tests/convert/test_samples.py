"""Acceptance: every sample format converts with max absolute error <= 1e-4 on float outputs and identical labels,
measured on the sample's held-out split; the written model carries its card and loads in onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mlpk.packager import card as cards
from mlpk.packager.convert import ConvertOptions, convert

REPO = Path(__file__).resolve().parents[2]
DIGITS_CLASS = str(REPO / "samples" / "torch_cnn.py") + ":DigitsCNN"


def _check(result, source: Path, npz: Path, kind: str) -> None:  # noqa: ANN001 - a ConvertResult
    report = result.parity
    assert report is not None and report.passed
    assert report.inputs_from == f"sample data {npz.name}"
    assert report.samples == len(np.load(npz)["labels"])
    for out in report.outputs:
        if out.agreement is not None:
            assert out.agreement == 1.0, out
        assert out.max_abs <= 1e-4, out
    # The file on disk: loads, carries the card (embedded and beside it), and gives the source's labels.
    model = onnx.load(str(result.output))
    card = cards.from_model(model)
    assert card is not None and card.source.kind == kind and card.source.file == source.name
    assert card.source.sha256 == cards.sha256_of(source)
    assert card.parity is not None and card.parity["passed"]
    beside = json.loads(cards.card_path(result.output).read_text())
    assert beside == card.to_dict()
    session = ort.InferenceSession(str(result.output), providers=["CPUExecutionProvider"])
    data = np.load(npz)
    feed = {i.name: data[[k for k in data.files if k != "labels"][0]] for i in session.get_inputs()}
    if session.get_inputs()[0].type == "tensor(string)":
        feed = {k: v.reshape(-1, 1) for k, v in feed.items()}
    first = session.run(None, feed)
    predicted = first[0] if first[0].dtype.kind in "iu" else first[0].argmax(axis=1)
    accuracy = float(np.mean(predicted.ravel() == data["labels"]))
    assert accuracy > 0.9, accuracy


@pytest.mark.keras
@pytest.mark.parametrize("name", ["digits_cnn.h5", "digits_cnn.keras", "digits_cnn_savedmodel"])
def test_keras_samples_convert(keras_models: Path, tmp_path: Path, name: str) -> None:
    source, npz = keras_models / name, keras_models / "digits_nhwc_test.npz"
    result = convert(source, tmp_path / "digits.onnx", sample_data=npz)
    _check(result, source, npz, "keras")
    assert [s.shape for s in result.card.inputs] == [("batch", 8, 8, 1)]


@pytest.mark.torch
@pytest.mark.parametrize(("name", "options"), [
    ("digits_cnn_torchscript.pt", ConvertOptions()),
    ("digits_cnn.pt2", ConvertOptions()),
    ("digits_cnn_state.pt", ConvertOptions(model_class=DIGITS_CLASS, model_args={"width": 16})),
    ("digits_cnn.safetensors", ConvertOptions(model_class=DIGITS_CLASS)),
])
def test_torch_samples_convert(torch_models: Path, tmp_path: Path, name: str, options: ConvertOptions) -> None:
    source, npz = torch_models / name, torch_models / "digits_nchw_test.npz"
    result = convert(source, tmp_path / "digits.onnx", options=options, sample_data=npz)
    _check(result, source, npz, "torch")
    assert result.card.inputs[0].shape == ("batch", 1, 8, 8)  # dynamic batch axis by default
    if name.endswith("torchscript.pt"):  # dynamo cannot trace ScriptModules: the fallback and its reason
        assert "TorchScript exporter" in result.exporter
        assert any(n.startswith("dynamo exporter failed") for n in result.notes)
    else:
        assert "dynamo" in result.exporter


@pytest.mark.torch
def test_state_dict_class_as_module_path(torch_models: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`--model-class module:Class` resolves from the working directory, like `python -m`."""
    monkeypatch.chdir(REPO / "samples")
    monkeypatch.delitem(__import__("sys").modules, "torch_cnn", raising=False)
    result = convert(torch_models / "digits_cnn.safetensors", tmp_path / "m.onnx",
                     options=ConvertOptions(model_class="torch_cnn:DigitsCNN", model_args={"width": 16}),
                     sample_data=torch_models / "digits_nchw_test.npz")
    assert result.parity is not None and result.parity.passed
    assert result.parity.outputs[0].max_abs <= 1e-4


@pytest.mark.sklearn
@pytest.mark.parametrize("name", ["breast_cancer", "text_topics"])
def test_sklearn_samples_convert(sklearn_models: Path, tmp_path: Path, name: str) -> None:
    source, npz = sklearn_models / f"{name}.joblib", sklearn_models / f"{name}_test.npz"
    result = convert(source, tmp_path / f"{name}.onnx", options=ConvertOptions(trust_pickle=True), sample_data=npz)
    _check(result, source, npz, "sklearn")
    # Plain tensors, not ZipMap: label and probabilities.
    assert [o.name for o in result.card.outputs] == ["label", "probabilities"]
    assert result.card.outputs[1].dtype == "float32"
    if name == "text_topics":
        assert result.card.inputs[0].dtype == "str"
        model = onnx.load(str(result.output))
        locales = [a.s for n in model.graph.node if n.op_type == "StringNormalizer" for a in n.attribute
                   if a.name == "locale"]
        assert locales == [b"C.UTF-8"]  # the StringNormalizer locale trap (DESIGN.md, Verified)


@pytest.mark.sklearn
def test_sklearn_zipmap_when_asked(sklearn_models: Path, tmp_path: Path) -> None:
    result = convert(sklearn_models / "breast_cancer.joblib", tmp_path / "z.onnx",
                     options=ConvertOptions(trust_pickle=True, zipmap=True))
    assert result.card.outputs[1].dtype.startswith("seq")


@pytest.mark.sklearn
def test_cli_prints_parity_table_and_json(sklearn_models: Path, tmp_path: Path, mlpack) -> None:
    args = ("convert", str(sklearn_models / "breast_cancer.joblib"), "--trust-pickle", "--sample-data",
            str(sklearn_models / "breast_cancer_test.npz"), "-o", str(tmp_path / "bc.onnx"))
    table = mlpack(*args, check=True)
    assert "parity on 143 samples" in table.stdout and "probabilities" in table.stdout and "ok" in table.stdout
    data = json.loads(mlpack("--json", *args, check=True).stdout)
    outputs = {o["name"]: o for o in data["parity"]["outputs"]}
    assert outputs["label"]["agreement"] == 1.0 and outputs["probabilities"]["max_abs"] <= 1e-4
    assert data["card"]["source"]["kind"] == "sklearn"


@pytest.mark.keras
def test_keras3_keras_file_converts_through_saved_model_export(tmp_path: Path) -> None:
    """Keras 3 `.keras` files: Keras exports a SavedModel, tf2onnx converts it; parity is against the Keras 3 model.
    (tensorflow >= 2.16 installs Keras 3 as `keras`; tf-keras stays the Keras 2 API.)"""
    import keras

    keras.utils.set_random_seed(0)
    inputs = keras.Input(shape=(6,), name="features")
    hidden = keras.layers.Dense(8, activation="relu")(inputs)
    keras.Model(inputs, keras.layers.Dense(3, activation="softmax")(hidden)).save(tmp_path / "k3.keras")
    np.savez(tmp_path / "k3.npz", features=np.random.default_rng(0).standard_normal((32, 6)).astype(np.float32))
    result = convert(tmp_path / "k3.keras", tmp_path / "out" / "k3.onnx", sample_data=tmp_path / "k3.npz")
    assert result.format == "keras3-zip" and "exported by Keras 3" in result.exporter
    assert result.parity is not None and result.parity.passed and result.parity.samples == 32
    assert result.parity.outputs[0].max_abs <= 1e-4 and result.parity.outputs[0].agreement == 1.0
