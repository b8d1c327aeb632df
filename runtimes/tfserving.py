"""TensorFlow Serving REST compatibility: `POST /v1/models/{m}:predict` in the row (`instances`) and columnar
(`inputs`) formats, so clients written against TF Serving work unchanged.

Spec: TensorFlow Serving "RESTful API", section "Predict API": `instances` is a list of rows (a bare value per row
when the model has one input, else an object per row); `inputs` is the batched value (or an object of them);
answers are `{"predictions": ...}` and `{"outputs": ...}` in the same shapes; binary strings arrive as
`{"b64": "..."}`, also as a whole row or the whole `inputs` value of a model with one BYTES input. The row answer
needs every output to share its 0-th (batch) dimension, as TF Serving's does; when they do not, the request is
refused with 400, as TF Serving refuses it, and the message says to send `inputs` for the columnar answer.
Non-finite values are answered as codec answers them ("NaN", "Infinity", "-Infinity").
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import numpy as np

from mlpk.runtimes.budget import Hold
from mlpk.runtimes.codec import MAX_DIMS, dumps, from_json, json_ready, loads, max_numbers
from mlpk.runtimes.errors import ClientError
from mlpk.runtimes.model import Model, TensorSpec


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str)


def _unb64(value: Any, depth: int = 0) -> Any:
    if depth > MAX_DIMS:
        raise ClientError(f"a BYTES value is nested {depth} lists deep; tensors have at most {MAX_DIMS} dimensions")
    if _is_b64(value):
        try:
            return base64.b64decode(value["b64"], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError) as err:
            raise ClientError(f"a {{'b64': ...}} value is not base64 of UTF-8 text: {err}") from err
    if isinstance(value, list):
        return [_unb64(item, depth + 1) for item in value]
    return value


def _tensor(value: Any, spec: TensorSpec, limit: int) -> np.ndarray:
    array = from_json(_unb64(value) if spec.datatype == "BYTES" else value, spec, limit)
    spec.check_shape(array.shape)
    return array


def parse(model: Model, body: bytes, limit: int,
          hold: Hold | None = None) -> tuple[dict[str, np.ndarray], str]:
    """The feeds of a :predict request and its format ("instances" or "inputs"); `hold` as codec.loads()."""
    request = loads(body, model, "predict request", hold=hold, max_numbers=max_numbers(model, limit))
    if not isinstance(request, dict) or ("instances" in request) == ("inputs" in request):
        raise ClientError(f"a predict request is a JSON object with exactly one of 'instances' or 'inputs'; the "
                          f"model '{model.name}' expects {model.signature()}")
    single = len(model.inputs) == 1
    if "instances" in request:
        rows = request["instances"]
        if not isinstance(rows, list) or not rows:
            raise ClientError("'instances' must be a non-empty list of rows")
        if single and not all(isinstance(row, dict) and not _is_b64(row) for row in rows):
            return {model.inputs[0].name: _tensor(rows, model.inputs[0], limit)}, "instances"
        if not all(isinstance(row, dict) for row in rows):
            raise ClientError(f"with several inputs each instance is an object keyed by input name; the model "
                              f"expects {model.signature()}")
        missing = [spec for spec in model.inputs if any(spec.name not in row for row in rows)]
        unknown = sorted({name for row in rows for name in row} - {spec.name for spec in model.inputs})
        columns = {spec.name: [row.get(spec.name) for row in rows] for spec in model.inputs}
        return _named(model, columns, limit, missing, unknown), "instances"
    value = request["inputs"]
    if single and (not isinstance(value, dict) or _is_b64(value)):
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


def _check_rows(names: list[str], results: list[np.ndarray]) -> None:
    """Rows can be zipped only when every output has the same 0-th dimension (TF Serving's rule for `instances`)."""
    batches = [array.shape[0] if array.ndim else None for array in results]
    if any(batch is None for batch in batches) or len(set(batches)) > 1:
        sizes = ", ".join(f"'{name}' {list(array.shape)}" for name, array in zip(names, results, strict=True))
        raise ClientError(f"the outputs do not share a 0-th (batch) dimension ({sizes}), so they cannot be answered "
                          "as rows of 'predictions'; send 'inputs' instead of 'instances' for the columnar answer")


def render(model: Model, results: list[np.ndarray], form: str) -> bytes:
    """The :predict answer for `results` (one per model output, in order)."""
    names = [spec.name for spec in model.outputs]
    if form == "instances":
        if len(results) == 1:
            answer: Any = {"predictions": json_ready(results[0])}
        else:
            _check_rows(names, results)
            columns = [json_ready(array) for array in results]
            answer = {"predictions": [dict(zip(names, row, strict=True)) for row in zip(*columns, strict=True)]}
    elif len(results) == 1:
        answer = {"outputs": json_ready(results[0])}
    else:
        answer = {"outputs": {name: json_ready(array) for name, array in zip(names, results, strict=True)}}
    return dumps(answer)
