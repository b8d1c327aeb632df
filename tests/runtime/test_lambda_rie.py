"""The Lambda handler through the real AWS Lambda Runtime Interface Emulator on this host: the RIE runs awslambdaric
with mlpk.runtimes.lambda_handler.handler as a local bootstrap process, and the test invokes it over the RIE's
invocation API with API Gateway v1, HTTP API v2, Function URL and direct events, a malformed event (a 4xx-style
answer, and the function keeps serving), and prints the init time."""

from __future__ import annotations

import base64
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.conftest import free_port, stop_process
from tests.runtime import models
from tests.runtime.models import MIXED_B, MIXED_W

pytestmark = pytest.mark.lambda_rie

X = [[1.0, 2.0, 3.0, 4.0], [0.0, -1.0, 0.5, 2.0]]
WANT_Y = (np.array(X, dtype=np.float32) @ MIXED_W + MIXED_B)
V2_BODY = {"inputs": [
    {"name": "x", "datatype": "FP32", "shape": [2, 4], "data": X},
    {"name": "h", "datatype": "FP16", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]},
    {"name": "ids", "datatype": "INT64", "shape": [2], "data": [10, 20]},
    {"name": "mask", "datatype": "BOOL", "shape": [2], "data": [True, False]},
    {"name": "text", "datatype": "BYTES", "shape": [2], "data": ["λ", "b"]}]}


class Function:
    """A function running under the RIE; `invoke(event)` returns the handler's answer as JSON."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes], log: Path, first_invoke_s: float) -> None:
        self.root = log.parent
        self.url = url
        self.proc = proc
        self.log = log
        self.first_invoke_s = first_invoke_s

    def invoke(self, event: Any) -> Any:
        answer = httpx.post(self.url, content=json.dumps(event), timeout=60)
        assert answer.status_code == 200, answer.text
        return answer.json()


@pytest.fixture(scope="module")
def function(lambda_rie: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Function]:
    root = tmp_path_factory.mktemp("lambda")
    model_dir = models.mixed(root / "model")
    arch = "arm64" if platform.machine() in ("aarch64", "arm64") else "amd64"
    port, api_port = free_port(), free_port()
    env = {**os.environ, "MLPACK_MODEL_DIR": str(model_dir), "AWS_LAMBDA_FUNCTION_TIMEOUT": "60",
           "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "512"}
    log = root / "rie.log"
    started = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(lambda_rie[arch]), "--runtime-interface-emulator-address", f"127.0.0.1:{port}",
             "--runtime-api-address", f"127.0.0.1:{api_port}",
             sys.executable, "-m", "awslambdaric", "mlpk.runtimes.lambda_handler.handler"],
            env=env, stdout=out, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}/2015-03-31/functions/function/invocations"
    try:
        deadline = time.monotonic() + 60
        while True:  # the first invocation runs the init phase (model load and warm-up)
            try:
                first = httpx.post(url, content=json.dumps({"instances": [V2_BODY["inputs"][0]["data"][0]]}),
                                   timeout=60)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError(f"the RIE never answered:\n{log.read_text(errors='replace')}") from None
                time.sleep(0.1)
        assert first.status_code == 200, first.text
        yield Function(url, proc, log, time.perf_counter() - started)
    finally:
        stop_process(proc)


def check_v2_body(body: dict[str, Any]) -> None:
    outputs = {o["name"]: o for o in body["outputs"]}
    np.testing.assert_allclose(np.array(outputs["y"]["data"]).reshape(2, 2), WANT_Y, rtol=1e-6)
    assert outputs["ids_next"]["data"] == [11, 21]
    assert outputs["text_out"]["data"] == ["λ", "b"]


def test_init_time_is_reported(function: Function) -> None:
    lines = [json.loads(line) for line in function.log.read_text(errors="replace").splitlines()
             if line.startswith("{")]
    init = next(line for line in lines if line.get("msg") == "lambda init done")
    print(f"\nLambda init (model load + warm-up, measured in the handler): {init['init_s'] * 1000:.1f} ms; "
          f"RIE start to first answer: {function.first_invoke_s * 1000:.0f} ms")
    assert init["init_s"] < 10  # Lambda caps the init phase at 10 s


def test_api_gateway_v1_event(function: Function) -> None:
    event = {"resource": "/{proxy+}", "path": "/v2/models/mixed/infer", "httpMethod": "POST",
             "headers": {"Content-Type": "application/json"}, "requestContext": {"stage": "prod"},
             "body": json.dumps(V2_BODY), "isBase64Encoded": False}
    answer = function.invoke(event)
    assert answer["statusCode"] == 200 and answer["isBase64Encoded"] is False
    check_v2_body(json.loads(answer["body"]))


def test_http_api_v2_event_with_base64_body_and_stage(function: Function) -> None:
    event = {"version": "2.0", "routeKey": "$default", "rawPath": "/prod/v2/models/mixed/infer",
             "headers": {"content-type": "application/json"},
             "requestContext": {"http": {"method": "POST", "path": "/prod/v2/models/mixed/infer"}, "stage": "prod"},
             "body": base64.b64encode(json.dumps(V2_BODY).encode()).decode(), "isBase64Encoded": True}
    answer = function.invoke(event)
    assert answer["statusCode"] == 200, answer
    check_v2_body(json.loads(answer["body"]))


def test_function_url_event_binary_and_tf_serving(function: Function) -> None:
    header = json.dumps({"inputs": V2_BODY["inputs"], "outputs": [{"name": "y", "parameters": {"binary_data": True}}]})
    event = {"version": "2.0", "rawPath": "/v2/models/mixed/infer", "rawQueryString": "",
             "headers": {"inference-header-content-length": str(len(header))},
             "requestContext": {"domainName": "abc.lambda-url.eu-west-1.on.aws",
                                "http": {"method": "POST", "path": "/v2/models/mixed/infer"}},
             "body": base64.b64encode(header.encode()).decode(), "isBase64Encoded": True}
    answer = function.invoke(event)
    assert answer["statusCode"] == 200 and answer["isBase64Encoded"] is True
    raw = base64.b64decode(answer["body"])
    length = int(answer["headers"]["Inference-Header-Content-Length"])
    meta = json.loads(raw[:length])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 16
    np.testing.assert_allclose(np.frombuffer(raw[length:], np.float32).reshape(2, 2), WANT_Y, rtol=1e-6)

    rows = {"instances": [{"x": X[0], "h": [1, 2, 3], "ids": 1, "mask": True, "text": "a"}]}
    event.update(rawPath="/", headers={}, body=json.dumps(rows), isBase64Encoded=False,
                 requestContext={"http": {"method": "POST", "path": "/"}})
    answer = function.invoke(event)
    assert answer["statusCode"] == 200, answer
    assert json.loads(answer["body"])["predictions"][0]["ids_next"] == 2


def test_direct_invocation(function: Function) -> None:
    check_v2_body(function.invoke(V2_BODY))
    answer = function.invoke({"inputs": {"x": X, "h": [[1, 2, 3]] * 2, "ids": [1, 2], "mask": [True, True],
                                         "text": ["a", "b"]}})
    np.testing.assert_allclose(answer["outputs"]["y"], WANT_Y, rtol=1e-6)


def test_metadata_and_health_over_http_events(function: Function) -> None:
    answer = function.invoke({"httpMethod": "GET", "path": "/v2/models/mixed", "headers": None, "body": None})
    assert answer["statusCode"] == 200
    assert [i["name"] for i in json.loads(answer["body"])["inputs"]] == ["x", "h", "ids", "mask", "text"]
    answer = function.invoke({"version": "2.0", "rawPath": "/v2/health/ready",
                              "requestContext": {"http": {"method": "GET", "path": "/v2/health/ready"}}})
    assert (answer["statusCode"], json.loads(answer["body"])) == (200, {"ready": True})


@pytest.mark.parametrize("event", [
    "just a string",
    [1, 2, 3],
    {"hello": "world"},
    {"httpMethod": "POST", "path": "/v2/models/mixed/infer", "body": "{not json"},
    {"version": "2.0", "rawPath": "/v2/models/mixed/infer", "body": "***", "isBase64Encoded": True,
     "requestContext": {"http": {"method": "POST"}}},
    {"httpMethod": "POST", "path": "/v2/models/other/infer", "body": json.dumps(V2_BODY)},
    {"inputs": [{"name": "x", "datatype": "INT64", "shape": [1, 4], "data": [1, 2, 3, 4]}]},
], ids=["string", "list", "unknown-shape", "bad-json-v1", "bad-base64-v2", "unknown-model", "wrong-dtype-direct"])
def test_malformed_events_get_4xx_and_the_function_keeps_serving(function: Function, event: Any) -> None:
    answer = function.invoke(event)
    assert 400 <= answer["statusCode"] < 500, answer
    message = answer["error"] if "error" in answer else json.loads(answer["body"])["error"]
    assert message
    if isinstance(event, dict) and event.get("path") == "/v2/models/mixed/infer":
        assert "'x' FP32 [-1, 4]" in message
    check_v2_body(function.invoke(V2_BODY))
    assert function.proc.poll() is None


def test_writes_nothing_beside_the_model_or_in_its_working_directory(function: Function) -> None:
    """Lambda's file system is read-only except /tmp: after every invocation above, the function's working
    directory holds only what the test put there, and the model directory only the model and its card."""
    assert sorted(p.name for p in function.root.iterdir()) == ["model", "rie.log"]
    assert sorted(p.name for p in (function.root / "model").iterdir()) == ["model-card.json", "model.onnx"]
