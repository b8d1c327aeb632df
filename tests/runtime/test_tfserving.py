"""TF Serving REST `:predict` against the real server: row and columnar formats, one and several inputs, b64."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort

from tests.runtime.conftest import Served
from tests.runtime.models import MIXED_B, MIXED_W


def test_instances_and_inputs_formats(mixed_server: Served, model_dirs: dict[str, Path]) -> None:
    rows = [{"x": [1, 2, 3, 4], "h": [1, 2, 3], "ids": 5, "mask": True, "text": "a"},
            {"x": [0, 0, 0, 1.5], "h": [0, 0, 1], "ids": -2, "mask": False, "text": {"b64": base64.b64encode(
                "ü".encode()).decode()}}]
    answer = httpx.post(mixed_server.url + "/v1/models/mixed:predict", json={"instances": rows})
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]
    x = np.array([r["x"] for r in rows], dtype=np.float32)
    np.testing.assert_allclose([p["y"] for p in predictions], x @ MIXED_W + MIXED_B, rtol=1e-6)
    assert [p["ids_next"] for p in predictions] == [6, -1]
    assert [p["unmasked"] for p in predictions] == [False, True]
    assert [p["text_out"] for p in predictions] == ["a", "ü"]

    columns = {"x": x.tolist(), "h": [[1, 2, 3], [0, 0, 1]], "ids": [5, -2], "mask": [True, False],
               "text": ["a", "b"]}
    answer = httpx.post(mixed_server.url + "/v1/models/mixed:predict", json={"inputs": columns})
    assert answer.status_code == 200, answer.text
    outputs = answer.json()["outputs"]
    session = ort.InferenceSession(str(model_dirs["mixed"] / "model.onnx"), providers=["CPUExecutionProvider"])
    want = session.run(["h2"], {"x": x, "h": np.array(columns["h"], np.float16), "ids": np.array([5, -2]),
                                "mask": np.array([True, False]), "text": np.array(["a", "b"], dtype=object)})[0]
    assert outputs["h2"] == want.tolist()
    assert httpx.get(mixed_server.url + "/v1/models/mixed").json()["model_version_status"][0]["state"] == "AVAILABLE"


def test_single_input_model_takes_bare_rows(server_factory, tmp_path: Path) -> None:
    from tests.runtime import models

    served = server_factory(models.heavy(tmp_path / "heavy", depth=1, width=4))
    answer = httpx.post(served.url + "/v1/models/heavy:predict", json={"instances": [[1, 0, 0, 0], [0, 1, 0, 0]]})
    assert answer.status_code == 200, answer.text
    predictions = np.array(answer.json()["predictions"])
    assert predictions.shape == (2, 4)
    answer = httpx.post(served.url + "/v1/models/heavy:predict", json={"inputs": [[1, 0, 0, 0]]})
    np.testing.assert_allclose(answer.json()["outputs"], predictions[:1], rtol=1e-6)
