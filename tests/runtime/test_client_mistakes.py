"""Requests a careless or hostile client sends, and answers a strict client must be able to read: every one is a
4xx JSON error naming what is wrong (never a 500, nothing logged as an error), and every 200 body is strict JSON.

Against the real server process where logging or headers matter, else through the Api object in process."""

from __future__ import annotations

import base64
import gzip
import json
import zlib
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from mlpk.runtimes import api, bodies, config
from mlpk.runtimes import model as model_module
from mlpk.runtimes.errors import ClientError
from tests.runtime.conftest import Served
from tests.runtime.models import IR_VERSION, OPSET
from tests.runtime.test_bad_input import assert_client_error, good_inputs, post, with_input


def strict_json(raw: bytes) -> Any:
    """The body parsed as RFC 8259 JSON: NaN / Infinity literals fail."""

    def refuse(literal: str) -> None:
        raise AssertionError(f"{literal} is not JSON")

    return json.loads(raw, parse_constant=refuse)


def _save(graph: onnx.GraphProto, directory: Path) -> Path:
    directory.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), directory / "model.onnx")
    return directory


def divide_model(directory: Path) -> Path:
    """q = a / b in FP32: 0/0 is NaN, 1/0 is Infinity."""
    graph = helper.make_graph([helper.make_node("Div", ["a", "b"], ["q"])], "divide",
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["n"]) for n in ("a", "b")],
                              [helper.make_tensor_value_info("q", TensorProto.FLOAT, ["n"])])
    return _save(graph, directory)


def totals_model(directory: Path) -> Path:
    """x [n, 2] -> rows (x itself) [n, 2] and totals (the column sums) [2]: outputs with different 0-th dims."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["rows"]),
                               helper.make_node("ReduceSum", ["x", "axes"], ["totals"], keepdims=0)], "totals",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 2])],
                              [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["n", 2]),
                               helper.make_tensor_value_info("totals", TensorProto.FLOAT, [2])],
                              [helper.make_tensor("axes", TensorProto.INT64, [1], [0])])
    return _save(graph, directory)


def text_model(directory: Path) -> Path:
    """One BYTES input, echoed."""
    graph = helper.make_graph([helper.make_node("Identity", ["text"], ["echo"])], "text",
                              [helper.make_tensor_value_info("text", TensorProto.STRING, ["n"])],
                              [helper.make_tensor_value_info("echo", TensorProto.STRING, ["n"])])
    return _save(graph, directory)


def in_process(directory: Path) -> api.Api:
    return api.Api(model_module.load(config.Settings(model_path=directory)), 100_000)


def call(served: api.Api, method: str, path: str, body: Any) -> tuple[int, Any]:
    route, params = api.match(method, path)
    reply = served.call(route, params, body if isinstance(body, bytes) else json.dumps(body).encode(), {})
    return reply.status, strict_json(reply.body)


def error_lines(served: Served) -> list[dict]:
    return [line for line in served.log_lines() if line["level"] in ("error", "critical")]


@pytest.mark.parametrize("path", ["/v2/models/mixed/infer", "/v1/models/mixed:predict"])
def test_deep_nesting_is_a_400_and_logs_no_error(mixed_server: Served, path: str) -> None:
    answer = post(mixed_server, b"[" * 100_000, path=path)
    assert_client_error(answer, 400, "nested too deep")
    for depth in (100, 900):  # parses, but no tensor has that many dimensions
        deep = ("[" * depth + '"a"' + "]" * depth).encode()
        tf_body = b'{"inputs": {"x": [[1, 2, 3, 4]], "h": [[1, 2, 3]], "ids": [1], "mask": [true], "text": %s}}' % deep
        assert_client_error(post(mixed_server, tf_body, path="/v1/models/mixed:predict"), 400)
        v2_body = json.dumps(with_input("text", data=[])).replace("[]", deep.decode()).encode()
        assert_client_error(post(mixed_server, v2_body), 400, "input 'text'")
    assert not error_lines(mixed_server)


def test_rows_of_outputs_without_a_shared_batch_axis_are_a_400(tmp_path: Path) -> None:
    served = in_process(totals_model(tmp_path / "totals"))
    status, answer = call(served, "POST", "/v1/models/model:predict", {"instances": [[1, 2], [3, 4], [5, 6]]})
    assert status == 400
    assert "0-th (batch) dimension ('rows' [3, 2], 'totals' [2])" in answer["error"], answer
    assert "send 'inputs'" in answer["error"]
    status, answer = call(served, "POST", "/v1/models/model:predict", {"inputs": [[1, 2], [3, 4], [5, 6]]})
    assert status == 200 and answer["outputs"]["totals"] == [9.0, 12.0]


def test_non_finite_outputs_are_strict_json_that_tritonclient_reads(tmp_path: Path) -> None:
    served = in_process(divide_model(tmp_path / "div"))
    body = {"inputs": [{"name": "a", "datatype": "FP32", "shape": [4], "data": [0, 1, -1, 3]},
                       {"name": "b", "datatype": "FP32", "shape": [4], "data": [0, 0, 0, 2]}]}
    status, answer = call(served, "POST", "/v2/models/model/infer", body)
    assert status == 200
    data = answer["outputs"][0]["data"]
    assert data == ["NaN", "Infinity", "-Infinity", 1.5]
    # what tritonclient.http's InferResult.as_numpy does with JSON data
    read = np.array(data, dtype=np.float32)
    assert np.isnan(read[0]) and read[1] == np.inf and read[2] == -np.inf and read[3] == 1.5
    status, answer = call(served, "POST", "/v1/models/model:predict", {"inputs": {"a": [0.0, 1.0], "b": [0, 0]}})
    assert status == 200 and answer == {"outputs": ["NaN", "Infinity"]}


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_literals_in_requests_are_a_400_naming_the_input(mixed_server: Served, literal: str) -> None:
    body = json.dumps(with_input("x", data=[0.5] * 7 + [0.5])).replace("0.5]", f"{literal}]", 1).encode()
    assert_client_error(post(mixed_server, body), 400, "input 'x'", literal)
    tf_body = b'{"instances": [{"x": [1, 2, 3, %s], "h": [1, 2, 3], "ids": 1, "mask": true, "text": "a"}]}' % (
        literal.encode())
    assert_client_error(post(mixed_server, tf_body, path="/v1/models/mixed:predict"), 400, "input 'x'", literal)


def test_b64_rows_and_inputs_for_one_bytes_input(tmp_path: Path) -> None:
    served = in_process(text_model(tmp_path / "text"))
    packed = [{"b64": base64.b64encode(text.encode()).decode()} for text in ("héllo", "x")]
    status, answer = call(served, "POST", "/v1/models/model:predict", {"instances": packed})
    assert status == 200, answer
    assert answer == {"predictions": ["héllo", "x"]}
    status, answer = call(served, "POST", "/v1/models/model:predict", {"inputs": packed})
    assert status == 200 and answer == {"outputs": ["héllo", "x"]}
    status, answer = call(served, "POST", "/v1/models/model:predict", {"inputs": {"b64": "aGk="}})
    assert status == 400 and "'text'" in answer["error"]  # one scalar string for an [n] input: a shape error
    status, answer = call(served, "POST", "/v1/models/model:predict", {"instances": [{"b64": "@@@"}]})
    assert status == 400 and "base64" in answer["error"]


def test_405_names_the_allowed_methods_in_allow(mixed_server: Served) -> None:
    answer = httpx.get(mixed_server.url + "/v2/models/mixed/infer")
    assert_client_error(answer, 405, "POST")
    assert answer.headers["allow"] == "POST"
    answer = httpx.delete(mixed_server.url + "/v2/health/live")
    assert answer.status_code == 405 and answer.headers["allow"] == "GET"


def test_a_predict_without_a_model_name_is_no_endpoint(mixed_server: Served) -> None:
    """`/v1/models/:predict` names no model: 404, not a 405 from `GET /v1/models/{model}` taking `:predict` as a
    model's name (found by the OpenAPI fuzz test)."""
    for path in ("/v1/models/:predict", "/v1/models/%0D:predict", "/v1/models/mixed/versions/:predict"):
        answer = httpx.post(mixed_server.url + path, json={"instances": [[0.0]]})
        assert answer.status_code == 404, (path, answer.text)
        assert "error" in answer.json()


@pytest.mark.parametrize("parameters", [
    {"parameters": {"binary_data_output": "false"}},
    {"parameters": {"binary_data_output": 1}},
    {"outputs": [{"name": "y", "parameters": {"binary_data": "true"}}]},
    {"parameters": "binary"},
])
def test_parameters_are_strictly_typed(mixed_server: Served, parameters: dict[str, Any]) -> None:
    answer = post(mixed_server, {"inputs": good_inputs(), **parameters})
    message = assert_client_error(answer, 400)
    assert "binary_data" in message or "'parameters'" in message
    assert "JSON boolean" in message or "must be an object" in message
    answer = post(mixed_server, {"inputs": good_inputs(), "parameters": {"binary_data_output": False}})
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("application/json")


@pytest.mark.parametrize(("value", "shown"), [(70000, "70000"), (-1e6, "-1000000.0")])
def test_fp16_values_past_its_range_are_a_400(mixed_server: Served, value: float, shown: str) -> None:
    answer = post(mixed_server, with_input("h", data=[1, 2, value, 4, 5, 6]))
    assert_client_error(answer, 400, "input 'h'", shown, "FP16", "65504")
    assert post(mixed_server, with_input("h", data=[65504, 1, 2, 3, 4, 5])).status_code == 200


def test_fp32_overflow_is_a_400(mixed_server: Served) -> None:
    assert_client_error(post(mixed_server, with_input("x", data=[1e39] + [0.5] * 7)), 400, "input 'x'", "FP32")


def test_gzip_with_trailing_garbage_is_a_400(mixed_server: Served) -> None:
    packed = gzip.compress(json.dumps({"inputs": good_inputs()}).encode())
    answer = post(mixed_server, packed + b"garbage", headers={"Content-Encoding": "gzip"})
    assert_client_error(answer, 400, "7 bytes of trailing data")
    assert post(mixed_server, packed, headers={"Content-Encoding": "gzip"}).status_code == 200


def test_gzip_members_are_concatenated_and_deflate_trailers_refused() -> None:
    assert bodies.decode(gzip.compress(b"ab") + gzip.compress(b"cd"), "gzip", 100) == b"abcd"
    with pytest.raises(ClientError, match="trailing data"):
        bodies.decode(zlib.compress(b"ab") + b"x", "deflate", 100)
