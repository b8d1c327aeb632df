"""The Open Inference Protocol over gRPC (runtimes/grpc_server.py) with tritonclient.grpc, unchanged, against the
real server process on loopback: health, metadata and the repository index; inference with every datatype through
raw contents (as the client sends them) and through typed contents (the client's own generated messages); a client
mistake answered INVALID_ARGUMENT with the message HTTP's 400 carries; size limits, readiness and metrics.

The server runs in its own process, as in images: its messages come from the package's own descriptor set, and
tritonclient.grpc registers the same `inference.*` names in protobuf's default pool of this process."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp
from tritonclient.grpc import service_pb2, service_pb2_grpc

from tests.conftest import free_port
from tests.runtime import models
from tests.runtime.conftest import Served
from tests.runtime.test_lifecycle import spawn
from tests.runtime.test_tritonclient import MIXED_TYPES, NUMPY, SHAPES, assert_equal, reference, sample


class GrpcServed:
    """A server process with its HTTP and gRPC addresses."""

    def __init__(self, served: Served, port: int) -> None:
        self.http = served
        self.target = f"127.0.0.1:{port}"

    def client(self) -> tgrpc.InferenceServerClient:
        return tgrpc.InferenceServerClient(self.target)


@pytest.fixture(scope="module")
def mixed_grpc(server_factory: Callable[..., Served], model_dirs: dict[str, Path]) -> GrpcServed:
    port = free_port()
    served = server_factory(model_dirs["mixed"], MLPACK_GRPC_PORT=str(port), MLPACK_MAX_BODY_BYTES=str(1 << 20),
                            MLPACK_MAX_TENSOR_ELEMENTS="100000")
    return GrpcServed(served, port)


@pytest.fixture(scope="module")
def every_grpc(server_factory: Callable[..., Served], model_dirs: dict[str, Path]) -> GrpcServed:
    port = free_port()
    return GrpcServed(server_factory(model_dirs["every"], MLPACK_GRPC_PORT=str(port)), port)


def inputs_of(feeds: dict[str, np.ndarray], types: dict[str, str]) -> list[tgrpc.InferInput]:
    items = []
    for name, value in feeds.items():
        item = tgrpc.InferInput(name, list(value.shape), types[name])
        item.set_data_from_numpy(value)
        items.append(item)
    return items


def test_health_metadata_and_repository_index(mixed_grpc: GrpcServed) -> None:
    client = mixed_grpc.client()
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("mixed") and client.is_model_ready("mixed", "1")
    assert not client.is_model_ready("nope") and not client.is_model_ready("mixed", "2")
    server = client.get_server_metadata(as_json=True)
    assert server["name"] == "mlpack" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("mixed", as_json=True)
    http = httpx.get(mixed_grpc.http.url + "/v2/models/mixed").json()
    for key in ("inputs", "outputs"):  # the same tensors as HTTP's metadata (JSON renders int64 shapes as text)
        assert [{**t, "shape": [int(d) for d in t["shape"]]} for t in meta[key]] == http[key]
    assert meta["name"] == "mixed" and meta["versions"] == ["1"] and meta["platform"] == http["platform"]
    with pytest.raises(tgrpc.InferenceServerException) as unknown:
        client.get_model_metadata("nope")
    assert unknown.value.status() == "StatusCode.NOT_FOUND" and "unknown model 'nope'" in unknown.value.message()
    index = client.get_model_repository_index(as_json=True)
    assert index["models"] == [{"name": "mixed", "version": "1", "state": "READY"}]


def test_every_datatype_round_trips_raw(every_grpc: GrpcServed, model_dirs: dict[str, Path]) -> None:
    rng = np.random.default_rng(3)
    types = {f"in_{kind.lower()}": kind for kind in NUMPY}
    feeds = {name: sample(kind, (3, 2), rng) for name, kind in types.items()}
    want = reference(model_dirs["every"], feeds)
    result = every_grpc.client().infer("every-dtype", inputs_of(feeds, types), request_id="g-1")
    assert result.get_response().id == "g-1"
    assert len(result.get_response().raw_output_contents) == len(want)  # JSON-free: every tensor as raw bytes
    for name, value in want.items():
        assert_equal(result.as_numpy(name), value)


@pytest.mark.parametrize("batch", [1, 7])
def test_mixed_model_outputs_equal_onnxruntime(mixed_grpc: GrpcServed, model_dirs: dict[str, Path],
                                               batch: int) -> None:
    rng = np.random.default_rng(batch)
    feeds = {name: sample(kind, (batch, *SHAPES[name]), rng) for name, kind in MIXED_TYPES.items()}
    feeds["ids"] = rng.integers(-1000, 1000, size=(batch,), dtype=np.int64)
    feeds["h"] = (rng.standard_normal((batch, 3)) * 10).astype(np.float16)
    want = reference(model_dirs["mixed"], feeds)
    client = mixed_grpc.client()
    result = client.infer("mixed", inputs_of(feeds, MIXED_TYPES))
    for name, value in want.items():
        assert_equal(result.as_numpy(name), value)
    only = client.infer("mixed", inputs_of(feeds, MIXED_TYPES),
                        outputs=[tgrpc.InferRequestedOutput("text_out"), tgrpc.InferRequestedOutput("y")])
    assert [o.name for o in only.get_response().outputs] == ["text_out", "y"]
    assert_equal(only.as_numpy("y"), want["y"])
    assert only.as_numpy("h2") is None


TYPED = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
         "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
         "UINT64": "uint64_contents", "FP32": "fp32_contents", "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def typed_request(model: str, feeds: dict[str, np.ndarray], types: dict[str, str]) -> service_pb2.ModelInferRequest:
    """A ModelInferRequest built from tritonclient's own generated messages, the tensors in typed `contents`."""
    request = service_pb2.ModelInferRequest(model_name=model)
    for name, value in feeds.items():
        tensor = request.inputs.add(name=name, datatype=types[name], shape=list(value.shape))
        flat = value.ravel().tolist()
        field = TYPED.get(types[name], "fp32_contents")  # FP16 has no field of its own: the server must say so
        getattr(tensor.contents, field).extend([v.encode() for v in flat] if types[name] == "BYTES" else flat)
    return request


def test_typed_contents_for_every_datatype_that_has_a_field(server_factory: Callable[..., Served],
                                                            tmp_path_factory: pytest.TempPathFactory,
                                                            every_grpc: GrpcServed) -> None:
    model_dir = models.every_dtype(tmp_path_factory.mktemp("typed"), kinds=tuple(TYPED))
    port = free_port()
    server_factory(model_dir, MLPACK_GRPC_PORT=str(port))
    rng = np.random.default_rng(11)
    types = {f"in_{kind.lower()}": kind for kind in TYPED}
    feeds = {name: sample(kind, (3, 2), rng) for name, kind in types.items()}
    feeds["in_fp32"] = feeds["in_fp32"].round(2)
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        answer = service_pb2_grpc.GRPCInferenceServiceStub(channel).ModelInfer(
            typed_request("every-dtype", feeds, types))
    got = tgrpc.InferResult(answer)
    for name, value in reference(model_dir, feeds).items():
        assert_equal(got.as_numpy(name), value)
    with grpc.insecure_channel(every_grpc.target) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as no_field:
            stub.ModelInfer(typed_request("every-dtype", {"in_fp16": np.zeros((3, 2), np.float16)},
                                          {"in_fp16": "FP16"}))
        assert no_field.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "in_fp16' is FP16, which has no typed contents field" in no_field.value.details()
        both = typed_request("every-dtype", {"in_int8": np.zeros((3, 2), np.int8)}, {"in_int8": "INT8"})
        both.raw_input_contents.append(np.zeros((3, 2), np.int8).tobytes())
        with pytest.raises(grpc.RpcError) as mixed_ways:
            stub.ModelInfer(both)
        assert mixed_ways.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "both contents and raw_input_contents" in mixed_ways.value.details()


def http_and_grpc_errors(served: GrpcServed, feeds: dict[str, np.ndarray], types: dict[str, str],
                         shapes: dict[str, list[int]]) -> tuple[str, str]:
    """The message of HTTP's 400 (tritonclient.http, binary tensors) and the INVALID_ARGUMENT details of gRPC for
    the same request; `shapes` declares shapes other than the data's."""
    http_inputs = []
    for name, value in feeds.items():
        item = thttp.InferInput(name, list(value.shape), types[name])
        item.set_data_from_numpy(value, binary_data=True)
        item.set_shape(shapes.get(name, list(value.shape)))
        http_inputs.append(item)
    grpc_inputs = inputs_of(feeds, types)
    for item in grpc_inputs:
        item.set_shape(shapes.get(item.name(), item.shape()))
    with pytest.raises(thttp.InferenceServerException) as http:
        thttp.InferenceServerClient(served.http.host).infer("mixed", http_inputs)
    assert http.value.status() == "400"
    with pytest.raises(tgrpc.InferenceServerException) as rpc:
        served.client().infer("mixed", grpc_inputs)
    assert rpc.value.status() == "StatusCode.INVALID_ARGUMENT"
    return http.value.message(), rpc.value.message()


def good_feeds() -> dict[str, np.ndarray]:
    return {"x": np.ones((2, 4), np.float32), "h": np.ones((2, 3), np.float16), "ids": np.array([1, 2]),
            "mask": np.array([True, False]), "text": np.array([b"a", b"b"], dtype=object)}


@pytest.mark.parametrize("mistake", ["shape", "datatype", "unknown input", "missing input", "bytes"])
def test_a_client_mistake_reads_the_same_as_http(mixed_grpc: GrpcServed, mistake: str) -> None:
    feeds, types, shapes = good_feeds(), dict(MIXED_TYPES), {}
    if mistake == "shape":
        feeds["x"] = np.ones((2, 5), np.float32)
    elif mistake == "datatype":
        feeds["x"], types["x"] = np.ones((2, 4), np.float64), "FP64"
    elif mistake == "unknown input":
        feeds["bogus"], types["bogus"] = np.ones((2,), np.float32), "FP32"
    elif mistake == "missing input":
        del feeds["mask"]
    else:
        shapes["x"] = [2, 3]  # 32 bytes of data for a shape that needs 24
    http, rpc = http_and_grpc_errors(mixed_grpc, feeds, types, shapes)
    assert rpc == http, (rpc, http)
    assert {"shape": "[2, 5]", "datatype": "FP64", "unknown input": "bogus", "missing input": "mask",
            "bytes": "32"}[mistake] in rpc


def test_size_limits_are_resource_exhausted(mixed_grpc: GrpcServed) -> None:
    feeds = good_feeds()
    feeds["x"] = np.ones((70_000, 4), np.float32)  # 1.1 MB: past MLPACK_MAX_BODY_BYTES (1 MiB), the largest message
    with pytest.raises(tgrpc.InferenceServerException) as large:
        mixed_grpc.client().infer("mixed", inputs_of(feeds, MIXED_TYPES))
    assert large.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    feeds["x"] = np.ones((30_000, 4), np.float32)  # 120,000 elements: past MLPACK_MAX_TENSOR_ELEMENTS (100,000)
    with pytest.raises(tgrpc.InferenceServerException) as elements:
        mixed_grpc.client().infer("mixed", inputs_of(feeds, MIXED_TYPES))
    assert elements.value.status() in ("StatusCode.RESOURCE_EXHAUSTED", "StatusCode.INVALID_ARGUMENT")
    assert "100000" in elements.value.message()


def test_calls_are_counted_in_metrics(mixed_grpc: GrpcServed) -> None:
    client = mixed_grpc.client()
    client.infer("mixed", inputs_of(good_feeds(), MIXED_TYPES))
    with pytest.raises(tgrpc.InferenceServerException):
        client.get_model_metadata("nope")
    text = httpx.get(mixed_grpc.http.url + "/metrics").text
    assert 'endpoint="/inference.GRPCInferenceService/ModelInfer",method="GRPC",status="OK"' in text
    assert 'endpoint="/inference.GRPCInferenceService/ModelMetadata",method="GRPC",status="NOT_FOUND"' in text
    assert "Traceback" not in mixed_grpc.http.log_text()  # client mistakes are not logged as errors


def test_unavailable_until_warm_then_drained_on_sigterm(tmp_path: Path) -> None:
    model_dir = models.heavy(tmp_path / "m", depth=8, width=2048)
    port = free_port()
    url, proc = spawn(model_dir, tmp_path / "log", MLPACK_WARMUP_RUNS="600", MLPACK_GRPC_PORT=str(port))
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # gRPC listens before HTTP: once HTTP is live, gRPC answers at once
            try:  # (a gRPC channel refused early would wait out its reconnect backoff, past the warm-up)
                if httpx.get(url + "/v2/health/live").status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.02)
        client = tgrpc.InferenceServerClient(f"127.0.0.1:{port}")
        seen_unavailable = False
        while time.monotonic() < deadline:
            try:
                if client.is_server_ready():
                    break
            except tgrpc.InferenceServerException:
                time.sleep(0.05)  # not listening yet
                continue
            assert client.is_server_live()
            if client.is_model_ready("heavy"):  # the warm-up ended just now
                break
            tensor = tgrpc.InferInput("x", [1, 2048], "FP32")
            tensor.set_data_from_numpy(np.ones((1, 2048), np.float32))
            try:
                client.infer("heavy", [tensor])
            except tgrpc.InferenceServerException as err:
                if client.is_server_ready():  # the warm-up ended between the two calls
                    break
                assert err.status() == "StatusCode.UNAVAILABLE" and "warm" in err.message()
                seen_unavailable = True
        assert seen_unavailable, "inference was never UNAVAILABLE during a 600-run warm-up"
        assert client.is_model_ready("heavy")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) == 0, (tmp_path / "log").read_text()
        with pytest.raises(tgrpc.InferenceServerException):
            tgrpc.InferenceServerClient(f"127.0.0.1:{port}").is_server_live()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
