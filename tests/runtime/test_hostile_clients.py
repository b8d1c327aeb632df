"""What an audit with hostile clients found, against the real server process: garbage after a complete request
(pipelined, or a Content-Length shorter than the body) used to leave the request unanswered and its place in the
model's queue taken; a lone UTF-16 surrogate escape reached code that cannot encode it (500, for every call of its
batch); the repository index answered 500 to deep nesting; gRPC's `timeout` parameter was checked only on the slow
path, and typed float contents refused NaN, which raw contents carry."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import free_port
from tests.runtime import models
from tests.runtime.conftest import Served
from tests.runtime.test_bad_input import assert_client_error, good_inputs, post


def _exchange(served: Served, raw: bytes, wait: float = 10.0) -> bytes:
    """Send `raw` in one piece and read until the server closes the connection (or `wait` passes)."""
    host, port = served.host.split(":")
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        sock.sendall(raw)
        chunks, deadline = [], time.monotonic() + wait
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def test_garbage_after_a_complete_request_still_answers_it_and_frees_its_place(
        server_factory: Callable[..., Served], model_dirs: dict[str, Path]) -> None:
    served = server_factory(model_dirs["mixed"], MLPACK_MAX_CONCURRENT_RUNS="1", MLPACK_MAX_QUEUE="1")
    body = json.dumps({"inputs": good_inputs()}).encode()
    request = (b"POST /v2/models/mixed/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               b"Content-Length: %d\r\n\r\n" % len(body)) + body
    for garbage in (b"BAD\x00\r\n\r\n", b"GET / HTTP/1.1\r\nBad Header Line\r\n\r\n"):
        started = time.monotonic()
        answer = _exchange(served, request + garbage)
        assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]
        assert time.monotonic() - started < 5, "the queued request waited for the client to hang up"
    # two such connections at once used to take the run and the queue place for good: everyone else got 429
    for _ in range(2):
        _exchange(served, request + b"BAD\x00\r\n\r\n")
    assert post(served, {"inputs": good_inputs()}).status_code == 200


def test_a_lone_surrogate_is_a_client_error_and_spoils_no_batch(
        server_factory: Callable[..., Served], model_dirs: dict[str, Path]) -> None:
    served = server_factory(model_dirs["mixed"], MLPACK_MAX_BATCH_SIZE="8", MLPACK_BATCH_DELAY_US="20000")
    good = json.dumps({"inputs": good_inputs(1)}).encode()
    hostile = [good.replace(b'"text", "datatype": "BYTES", "shape": [1], "data": ["a"]',
                            b'"text", "datatype": "BYTES", "shape": [1], "data": ["\\ud800"]'),
               good.replace(b'{"inputs"', b'{"id": "\\udfff", "inputs"'),
               good.replace(b'"name": "x"', b'"name": "\\ud800"')]
    assert all(body != good for body in hostile)
    for body in hostile:
        assert_client_error(post(served, body), 400, "surrogate")
    paired = good.replace(b'"data": ["a"]', b'"data": ["\\ud83d\\ude00"]')  # a whole character, escaped: fine
    outputs = {item["name"]: item["data"] for item in post(served, paired).json()["outputs"]}
    assert outputs["text_out"] == ["\U0001F600"]
    # sent together, the hostile call is refused before it reaches a batch, and the others are answered
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda body: post(served, body), [good, hostile[0], good, good]))
    assert [answer.status_code for answer in answers] == [200, 400, 200, 200]


def test_the_repository_index_refuses_what_it_cannot_parse(mixed_server: Served) -> None:
    for body in (b"[" * 100_000, b"1" * 5000, b'{"ready": "\\ud800"}'):
        answer = post(mixed_server, body, path="/v2/repository/index")
        assert answer.status_code == 400, (body[:20], answer.status_code, answer.text[:200])


def test_grpc_timeout_parameter_is_checked_on_every_path_and_typed_floats_may_be_nan(
        server_factory: Callable[..., Served], tmp_path: Path) -> None:
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    port = free_port()
    server_factory(models.every_dtype(tmp_path / "fp32", kinds=("FP32",)), MLPACK_GRPC_PORT=str(port))
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="every-dtype")
        tensor = request.inputs.add(name="in_fp32", datatype="FP32", shape=[1, 2])
        tensor.contents.fp32_contents.extend([float("nan"), float("inf")])
        request.outputs.add(name="out_fp32")
        got = np.frombuffer(stub.ModelInfer(request, timeout=10).raw_output_contents[0], np.float32)
        assert np.isnan(got[0]) and got[1] == np.inf  # as the same values sent as raw bytes are answered
        for field, bad in (("string_param", "soon"), ("int64_param", -5), ("bool_param", True)):
            request.parameters["timeout"].Clear()
            setattr(request.parameters["timeout"], field, bad)
            with pytest.raises(grpc.RpcError) as err:  # a 1-row call runs inline: it was not checked there
                stub.ModelInfer(request, timeout=10)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "timeout" in err.value.details()


def test_an_offered_upgrade_is_declined_and_the_request_served(
        server_factory: Callable[..., Served], model_dirs: dict[str, Path]) -> None:
    """`Upgrade: h2c` (curl --http2, Java's HttpClient) on a POST: llhttp stops at the headers, and the body used
    to be lost (400, "the request body has 0 bytes"). Served as HTTP/1.1 now, with its body framed by
    Content-Length or chunks, split across packets or not, and the pipelined request behind it answered too."""
    import subprocess

    served = server_factory(model_dirs["mixed"])
    body = json.dumps({"inputs": good_inputs()}).encode()
    want = post(served, body).json()["outputs"]
    offer = b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n"
    head = b"POST /v2/models/mixed/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n" + offer
    sized = head + b"Content-Length: %d\r\n\r\n" % len(body) + body
    chunked = head + b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    closing = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    for raw in (sized + closing, chunked + closing, sized + sized + closing):
        answer = _exchange(served, raw)
        assert answer.count(b"HTTP/1.1 200 ") == raw.count(b"HTTP/1.1\r\n"), answer[:300]
        first = answer.split(b"\r\n\r\n", 1)[1]
        assert json.loads(first[:first.index(b"}]}") + 3])["outputs"] == want
    host, port = served.host.split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:  # the body after the headers, later
        sock.sendall(head + b"Content-Length: %d\r\n\r\n" % len(body))
        time.sleep(0.2)
        sock.sendall(body)
        assert sock.recv(65536).startswith(b"HTTP/1.1 200 ")
    curl = subprocess.run(["curl", "-s", "--http2", "-X", "POST", "--data-binary", "@-", "-H",
                           "Content-Type: application/json", served.url + "/v2/models/mixed/infer"],
                          input=body, capture_output=True, timeout=30, check=True)
    assert json.loads(curl.stdout)["outputs"] == want


def test_an_empty_tensor_with_a_huge_dimension_is_a_client_error(
        server_factory: Callable[..., Served], tmp_path: Path) -> None:
    """Shape [2**61, 0] holds no element, so the element limit passed it, and numpy could not make the array: 500
    over JSON and binary, UNKNOWN over gRPC. A dimension over the element limit is now refused on every path."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    port = free_port()
    served = server_factory(models.seq(tmp_path / "seq"), MLPACK_GRPC_PORT=str(port))
    huge, path = [2**61, 0], "/v2/models/seq/infer"
    answer = post(served, {"inputs": [{"name": "x", "datatype": "FP32", "shape": huge, "data": []}]}, path)
    assert_client_error(answer, 400, "has a dimension of 2305843009213693952", "MLPACK_MAX_TENSOR_ELEMENTS")
    header = json.dumps({"inputs": [{"name": "x", "datatype": "FP32", "shape": huge,
                                     "parameters": {"binary_data_size": 0}}]}).encode()
    binary = post(served, header, path, headers={"Inference-Header-Content-Length": str(len(header)),
                                                 "Content-Type": "application/octet-stream"})
    assert_client_error(binary, 400, "has a dimension of")
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="seq")
        request.inputs.add(name="x", datatype="FP32", shape=huge)
        request.raw_input_contents.append(b"")
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(request, timeout=10)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "dimension of" in err.value.details()
    empty = {"inputs": [{"name": "x", "datatype": "FP32", "shape": [3, 0], "data": []}]}
    assert post(served, empty, path).status_code == 200  # an empty tensor of sane shape is still served
