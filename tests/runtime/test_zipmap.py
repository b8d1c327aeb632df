"""Non-tensor outputs on the real server: scikit-learn's ZipMap `output_probability` (a sequence of maps from class
label to probability) is served, never dropped: in v2 answers as a BYTES output of JSON texts, one object per row,
through tritonclient.http (JSON and binary) and raw HTTP; in TF Serving answers as plain JSON objects; and listed in
the model metadata with its content. Values must equal what onnxruntime computes in this process."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

from mlpk.runtimes import api, config
from mlpk.runtimes import model as model_module
from tests.runtime import models
from tests.runtime.conftest import Served

X = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)


@pytest.fixture(scope="module")
def iris_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.zipmap(tmp_path_factory.mktemp("iris") / "iris")


@pytest.fixture(scope="module")
def iris(server_factory: Callable[..., Served], iris_dir: Path) -> Served:
    return server_factory(iris_dir)


def reference(model_dir: Path) -> tuple[list[int], list[dict[str, float]]]:
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    labels, maps = session.run(["output_label", "output_probability"], {"X": X})
    return labels.tolist(), [{str(key): value for key, value in row.items()} for row in maps]


def assert_maps(got: list[dict[str, float]], want: list[dict[str, float]]) -> None:
    assert [list(row) for row in got] == [list(row) for row in want] == [["0", "1", "2"]] * len(X)
    np.testing.assert_allclose([list(row.values()) for row in got], [list(row.values()) for row in want],
                               rtol=1e-6)


def test_metadata_lists_the_map_output(iris: Served) -> None:
    meta = triton.InferenceServerClient(iris.host).get_model_metadata("iris")
    assert meta["outputs"] == [
        {"name": "output_label", "datatype": "INT64", "shape": [-1]},
        {"name": "output_probability", "datatype": "BYTES", "shape": [-1],
         "parameters": {"content": "json-maps", "onnx_type": "seq(map(int64,tensor(float)))"}}]
    loaded = [line for line in iris.log_lines() if line["msg"].startswith("output is not a tensor")]
    assert loaded and loaded[0]["level"] == "info"  # not a warning: it is served


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_tritonclient_gets_one_json_object_per_row(iris: Served, iris_dir: Path, binary: bool) -> None:
    client = triton.InferenceServerClient(iris.host)
    item = triton.InferInput("X", list(X.shape), "FP32")
    item.set_data_from_numpy(X, binary_data=binary)
    outputs = [triton.InferRequestedOutput(name, binary_data=binary)
               for name in ("output_label", "output_probability")]
    result = client.infer("iris", [item], outputs=outputs)
    probabilities = result.as_numpy("output_probability")
    assert probabilities.shape == (3,) and probabilities.dtype == object
    labels, maps = reference(iris_dir)
    assert result.as_numpy("output_label").tolist() == labels
    assert_maps([json.loads(text) for text in probabilities], maps)
    default = client.infer("iris", [item])  # no outputs named: tritonclient asks binary_data_output for all
    assert [json.loads(text) for text in default.as_numpy("output_probability")] == [
        json.loads(text) for text in probabilities]


def test_raw_v2_json_answer(iris: Served, iris_dir: Path) -> None:
    answer = httpx.post(iris.url + "/v2/models/iris/infer", json={"inputs": [
        {"name": "X", "datatype": "FP32", "shape": [3, 4], "data": X.reshape(-1).tolist()}]})
    assert answer.status_code == 200, answer.text
    output = next(o for o in answer.json()["outputs"] if o["name"] == "output_probability")
    assert (output["datatype"], output["shape"]) == ("BYTES", [3])
    assert all(isinstance(text, str) for text in output["data"])
    assert_maps([json.loads(text) for text in output["data"]], reference(iris_dir)[1])


def test_tf_serving_answers_plain_objects(iris: Served, iris_dir: Path) -> None:
    labels, maps = reference(iris_dir)
    rows = httpx.post(iris.url + "/v1/models/iris:predict", json={"instances": X.tolist()}).json()["predictions"]
    assert [row["output_label"] for row in rows] == labels
    assert_maps([row["output_probability"] for row in rows], maps)
    columns = httpx.post(iris.url + "/v1/models/iris:predict", json={"inputs": X.tolist()}).json()["outputs"]
    assert columns["output_label"] == labels
    assert_maps(columns["output_probability"], maps)


def test_string_labels_are_json_keys(tmp_path: Path) -> None:
    loaded = model_module.load(config.Settings(model_path=models.zipmap(tmp_path / "m", string_labels=True)))
    served = api.Api(loaded, 1000)
    route, params = api.match("POST", "/v1/models/iris:predict")
    reply = served.call(route, params, json.dumps({"instances": X[:1].tolist()}).encode(), {})
    [row] = json.loads(reply.body)["predictions"]
    assert row["output_label"] == "setosa"
    assert list(row["output_probability"]) == ["setosa", "versicolor", "virginica"]
    assert row["output_probability"]["setosa"] > 0.5
