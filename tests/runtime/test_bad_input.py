"""Every bad request gets a 4xx JSON error naming the input and what the model expects, never a 5xx, and the
server keeps serving. Against the real server process on loopback, with a 1 MiB body limit and a 100,000-element
tensor limit (set by the `mixed_server` fixture)."""

from __future__ import annotations

import json
import struct
from typing import Any

import httpx
import pytest

from tests.runtime.conftest import Served


def good_inputs(batch: int = 2) -> list[dict[str, Any]]:
    return [
        {"name": "x", "datatype": "FP32", "shape": [batch, 4], "data": [0.5] * (4 * batch)},
        {"name": "h", "datatype": "FP16", "shape": [batch, 3], "data": [1] * (3 * batch)},
        {"name": "ids", "datatype": "INT64", "shape": [batch], "data": list(range(batch))},
        {"name": "mask", "datatype": "BOOL", "shape": [batch], "data": [True] * batch},
        {"name": "text", "datatype": "BYTES", "shape": [batch], "data": ["a"] * batch},
    ]


def with_input(name: str, **change: Any) -> dict[str, Any]:
    inputs = good_inputs()
    for item in inputs:
        if item["name"] == name:
            item.update(change)
    return {"inputs": inputs}


def post(served: Served, body: Any, path: str = "/v2/models/mixed/infer", **kwargs: Any) -> httpx.Response:
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(served.url + path, content=content, timeout=10, **kwargs)


def assert_client_error(answer: httpx.Response, status: int, *fragments: str) -> str:
    assert answer.status_code == status, answer.text
    assert answer.headers["content-type"].startswith("application/json")
    message = answer.json()["error"]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_good_request_passes(mixed_server: Served) -> None:
    answer = post(mixed_server, {"inputs": good_inputs()})
    assert answer.status_code == 200, answer.text


CASES = {
    "wrong shape": (with_input("x", shape=[2, 5], data=[0.5] * 10), 400,
                    ["input 'x'", "shape [2, 5]", "expects shape [-1, 4]", "FP32"]),
    "wrong rank": (with_input("ids", shape=[2, 1]), 400, ["input 'ids'", "[-1]", "INT64"]),
    "wrong dtype": (with_input("x", datatype="INT64"), 400, ["input 'x'", "datatype INT64", "FP32", "[-1, 4]"]),
    "floats into int": (with_input("ids", data=[1.5, 2]), 400, ["input 'ids'", "INT64", "[-1]"]),
    "strings into float": (with_input("x", data=["a"] * 8), 400, ["input 'x'", "FP32", "[-1, 4]"]),
    "numbers into BYTES": (with_input("text", data=[1, 2]), 400, ["input 'text'", "BYTES", "[-1]"]),
    "data count": (with_input("x", data=[0.5] * 7), 400, ["input 'x'", "7 values", "[-1, 4]"]),
    "int8 range": (with_input("ids", data=[2 ** 63, 1]), 400, ["input 'ids'", "range of INT64"]),
    "missing input": ({"inputs": good_inputs()[:-1]}, 400, ["missing input 'text' BYTES [-1]"]),
    "unknown input": ({"inputs": [*good_inputs(), {"name": "z", "datatype": "FP32", "shape": [1], "data": [1]}]},
                      400, ["unknown input 'z'", "'x' FP32 [-1, 4]"]),
    "duplicate input": ({"inputs": [*good_inputs(), good_inputs()[0]]}, 400, ["input 'x' appears twice"]),
    "no inputs list": ({"instances": [1]}, 400, ["'inputs' list", "'x' FP32 [-1, 4]"]),
    "unknown output": ({"inputs": good_inputs(), "outputs": [{"name": "nope"}]}, 400,
                       ["unknown output 'nope'", "'y' FP32 [-1, 2]"]),
    "too many elements": (with_input("x", shape=[30000, 4], data=[]), 400,
                          ["input 'x'", "120000 elements", "limit of 100000"]),
    "negative shape": (with_input("x", shape=[-1, 4]), 400, ["input 'x'", "non-negative", "[-1, 4]", "FP32"]),
}


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_bad_v2_request(mixed_server: Served, case: str) -> None:
    body, status, fragments = CASES[case]
    assert_client_error(post(mixed_server, body), status, *fragments)


def test_unknown_model(mixed_server: Served) -> None:
    assert_client_error(post(mixed_server, {"inputs": good_inputs()}, "/v2/models/resnet/infer"), 404,
                        "unknown model 'resnet'", "serves 'mixed'", "'x' FP32 [-1, 4]")
    assert_client_error(post(mixed_server, {"inputs": good_inputs()}, "/v2/models/mixed/versions/7/infer"), 404,
                        "no version '7'")


@pytest.mark.parametrize("raw", [b'{"inputs": [', b"\xff\xfe", b"", b"not json"])
def test_malformed_json(mixed_server: Served, raw: bytes) -> None:
    assert_client_error(post(mixed_server, raw), 400, "malformed JSON", "'x' FP32 [-1, 4]", "'text' BYTES [-1]")


def test_oversized_body_is_413_before_reading_it(mixed_server: Served) -> None:
    body = b'{"inputs": [' + b" " * (2 << 20) + b"]}"
    assert_client_error(post(mixed_server, body), 413, "limit of 1048576 bytes", "'x' FP32 [-1, 4]")

    def chunks():  # no Content-Length: the limit applies while streaming
        for _ in range(40):
            yield b" " * 65536

    answer = httpx.post(mixed_server.url + "/v2/models/mixed/infer", content=chunks(), timeout=10)
    assert_client_error(answer, 413, "more than 1048576")


def binary_request(inputs: list[tuple[dict[str, Any], bytes]]) -> tuple[bytes, dict[str, str]]:
    header = json.dumps({"inputs": [meta for meta, _ in inputs]}).encode()
    return header + b"".join(raw for _, raw in inputs), {"Inference-Header-Content-Length": str(len(header))}


def test_bad_binary_layouts(mixed_server: Served) -> None:
    metas = good_inputs(1)
    metas[0] = {"name": "x", "datatype": "FP32", "shape": [1, 4], "parameters": {"binary_data_size": 12}}
    body, headers = binary_request([(metas[0], b"\0" * 12), *((m, b"") for m in metas[1:])])
    assert_client_error(post(mixed_server, body, headers=headers), 400, "input 'x'", "12 binary bytes", "needs 16")

    body, headers = binary_request([(dict(metas[0], parameters={"binary_data_size": 16}), b"\0" * 20),
                                    *((m, b"") for m in metas[1:])])
    assert_client_error(post(mixed_server, body, headers=headers), 400, "4 binary bytes")

    text = {"name": "text", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}
    body, headers = binary_request([*((m, b"") for m in good_inputs(1)[:-1]), (text, struct.pack("<I", 9) + b"ab")])
    assert_client_error(post(mixed_server, body, headers=headers), 400, "input 'text'", "claims 9 bytes")

    assert_client_error(post(mixed_server, {"inputs": good_inputs()},
                             headers={"Inference-Header-Content-Length": "999999"}), 400, "Inference-Header")
    assert_client_error(post(mixed_server, {"inputs": good_inputs()},
                             headers={"Inference-Header-Content-Length": "ten"}), 400, "not an integer")


def test_routes_and_methods(mixed_server: Served) -> None:
    assert_client_error(httpx.get(mixed_server.url + "/v3/whatever"), 404, "no endpoint GET /v3/whatever")
    assert_client_error(httpx.get(mixed_server.url + "/v2/models/mixed/infer"), 405, "use POST")
    assert_client_error(httpx.get(mixed_server.url + "/v2/models/nope/ready"), 404, "unknown model 'nope'")


TF_CASES = {
    "neither": ({"signature_name": "x"}, ["exactly one of 'instances' or 'inputs'", "'x' FP32 [-1, 4]"]),
    "both": ({"instances": [], "inputs": {}}, ["exactly one"]),
    "rows not objects": ({"instances": [[1, 2, 3, 4]]}, ["keyed by input name", "'h' FP16 [-1, 3]"]),
    "missing column": ({"inputs": {"x": [[1, 2, 3, 4]]}}, ["missing input 'h' FP16 [-1, 3]"]),
    "unknown column": ({"instances": [{"x": [1, 2, 3, 4], "z": 1}]}, ["unknown input 'z'", "'x' FP32 [-1, 4]"]),
    "bad shape": ({"inputs": {"x": [[1, 2, 3]], "h": [[1, 2, 3]], "ids": [1], "mask": [True], "text": ["a"]}},
                  ["input 'x' has shape [1, 3]", "[-1, 4]", "FP32"]),
    "bad b64": ({"inputs": {"x": [[1, 2, 3, 4]], "h": [[1, 2, 3]], "ids": [1], "mask": [True],
                            "text": [{"b64": "!!"}]}}, ["b64"]),
    "true among numbers": ({"inputs": {"x": [[1, 2, 3, 4]], "h": [[1, 2, 3]], "ids": [True], "mask": [True],
                                       "text": ["a"]}}, ["input 'ids' holds true/false among numbers", "INT64"]),
}


def test_true_among_numbers_is_refused_and_text_that_says_true_is_not(mixed_server: Served) -> None:
    """JSON true beside numbers was read as 1 ([1, true] for INT64, [0.5, true] for FP32): a client's mistake served
    as a number. A body that holds "true" only as text, or as a BOOL, is served as before."""
    for name, data in (("ids", [1, True]), ("x", [0.5, 0.5, 0.5, 0.5, 0.5, True, 0.5, 0.5]),
                       ("h", [[1, 1, 1], [1, False, 1]])):
        answer = post(mixed_server, with_input(name, data=data))
        assert_client_error(answer, 400, f"input '{name}' holds true/false among numbers", "only a BOOL input")
    assert post(mixed_server, with_input("text", data=["true", "false"])).status_code == 200


@pytest.mark.parametrize("case", TF_CASES, ids=list(TF_CASES))
def test_bad_predict_request(mixed_server: Served, case: str) -> None:
    body, fragments = TF_CASES[case]
    assert_client_error(post(mixed_server, body, "/v1/models/mixed:predict"), 400, *fragments)


def test_server_still_serves_and_counted_4xx(mixed_server: Served) -> None:
    assert post(mixed_server, {"inputs": good_inputs()}).status_code == 200
    metrics = httpx.get(mixed_server.url + "/metrics").text
    assert 'mlpack_requests_total{endpoint="/v2/models/{model}/infer",method="POST",status="400"}' in metrics
    assert 'status="500"' not in metrics


def test_paths_with_newlines_still_get_json(mixed_server: Served) -> None:
    """Found by schemathesis: Starlette's catch-all route pattern does not match an encoded newline."""
    assert_client_error(httpx.get(mixed_server.url + "/v2/models/a%0Ab"), 404, "unknown model")
    assert_client_error(post(mixed_server, {"inputs": []}, "/v2/models/a%0Ab/infer"), 404, "unknown model")
