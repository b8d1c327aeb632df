"""TensorFlow Serving REST compatibility: `POST /v1/models/{m}:predict` in the row (`instances`) and columnar
(`inputs`) formats, so clients written against TF Serving work unchanged.

Spec: TensorFlow Serving "RESTful API", section "Predict API": `instances` is a list of rows (a bare value per row
when the model has one input, else an object per row); `inputs` is the batched value (or an object of them);
answers are `{"predictions": ...}` and `{"outputs": ...}` in the same shapes; binary strings arrive as
`{"b64": "..."}`.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

import numpy as np

from mlpk.runtimes.codec import from_json, json_ready, loads
from mlpk.runtimes.errors import ClientError
from mlpk.runtimes.model import Model, TensorSpec


def _unb64(value: Any) -> Any:
    if isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        try:
            return base64.b64decode(value["b64"], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as err:
            raise ClientError(f"a {{'b64': ...}} value is not base64 of UTF-8 text: {err}") from err
    if isinstance(value, list):
        return [_unb64(item) for item in value]
    return value


def _tensor(value: Any, spec: TensorSpec, limit: int) -> np.ndarray:
    array = from_json(_unb64(value) if spec.datatype == "BYTES" else value, spec, limit)
    spec.check_shape(array.shape)
    return array


def parse(model: Model, body: bytes, limit: int) -> tuple[dict[str, np.ndarray], str]:
    """The feeds of a :predict request and its format ("instances" or "inputs")."""
    request = loads(body, model, "predict request")
    if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
        raise ClientError(f"a predict request is a JSON object with exactly one of 'instances' or 'inputs'; the "
                          f"model '{model.name}' expects {model.signature()}")
    single = len(model.inputs) == 1
    if "instances" in request:
        rows = request["instances"]
        if not isinstance(rows, list) or not rows:
            raise ClientError("'instances' must be a non-empty list of rows")
        if single and not all(isinstance(row, dict) for row in rows):
            return {model.inputs[0].name: _tensor(rows, model.inputs[0], limit)}, "instances"
        if not all(isinstance(row, dict) for row in rows):
            raise ClientError(f"with several inputs each instance is an object keyed by input name; the model "
                              f"expects {model.signature()}")
        missing = [spec for spec in model.inputs if any(spec.name not in row for row in rows)]
        unknown = sorted({name for row in rows for name in row} - {spec.name for spec in model.inputs})
        columns = {spec.name: [row.get(spec.name) for row in rows] for spec in model.inputs}
        return _named(model, columns, limit, missing, unknown), "instances"
    value = request["inputs"]
    if single and not isinstance(value, dict):
        return {model.inputs[0].name: _tensor(value, model.inputs[0], limit)}, "inputs"
    if not isinstance(value, dict):
        raise ClientError(f"with several inputs 'inputs' is an object keyed by input name; the model expects "
                          f"{model.signature()}")
    missing = [spec for spec in model.inputs if spec.name not in value]
    unknown = sorted(name for name in value if model.input(name) is None)
    return _named(model, value, limit, missing, unknown), "inputs"


def _named(model: Model, values: dict[str, Any], limit: int, missing: list[TensorSpec],
           unknown: list[str]) -> dict[str, np.ndarray]:
    """Feeds from input-name-keyed values, after reporting the first unknown name or all missing inputs."""
    if unknown:
        raise ClientError(f"unknown input '{unknown[0]}'; the model '{model.name}' expects {model.signature()}")
    if missing:
        raise ClientError(f"missing input {', '.join(spec.describe() for spec in missing)}")
    return {spec.name: _tensor(values[spec.name], spec, limit) for spec in model.inputs}


def render(model: Model, results: list[np.ndarray], form: str) -> bytes:
    """The :predict answer for `results` (one per model output, in order)."""
    names = [spec.name for spec in model.outputs]
    if form == "instances":
        if len(results) == 1:
            answer: Any = {"predictions": json_ready(results[0])}
        else:
            columns = [json_ready(array) for array in results]
            answer = {"predictions": [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]}
    elif len(results) == 1:
        answer = {"outputs": json_ready(results[0])}
    else:
        answer = {"outputs": {name: json_ready(array) for name, array in zip(names, results, strict=True)}}
    return json.dumps(answer, separators=(",", ":")).encode()
