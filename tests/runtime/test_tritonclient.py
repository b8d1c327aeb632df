"""tritonclient.http, unchanged, against the real server on loopback: health, metadata and inference in JSON and
binary mode, for every datatype, several inputs and outputs, and a dynamic batch axis; outputs must equal what
onnxruntime computes for the same inputs in this process."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.http as triton

from tests.runtime.conftest import Served

NUMPY = {"BOOL": np.bool_, "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
         "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64, "FP16": np.float16,
         "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}


def sample(datatype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if datatype == "BYTES":
        words = np.array(["héllo", "", "wörld", "a b", "ünïcode ✓", "x" * 40], dtype=object)
        return rng.choice(words, size=shape)
    if datatype == "BOOL":
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    dtype = np.dtype(NUMPY[datatype])
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max, size=shape, dtype=dtype, endpoint=True)
    return (rng.standard_normal(shape) * 100).astype(dtype)


def reference(model_dir: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))


def infer(served: Served, model: str, feeds: dict[str, np.ndarray], types: dict[str, str], binary: bool,
          outputs: list[str] | None = None) -> triton.InferResult:
    client = triton.InferenceServerClient(served.host)
    inputs = []
    for name, value in feeds.items():
        item = triton.InferInput(name, list(value.shape), types[name])
        item.set_data_from_numpy(value, binary_data=binary)
        inputs.append(item)
    requested = [triton.InferRequestedOutput(name, binary_data=binary) for name in outputs] if outputs else None
    return client.infer(model, inputs, outputs=requested, request_id="req-1")


def assert_equal(got: np.ndarray, want: np.ndarray) -> None:
    if want.dtype == object:
        want = np.vectorize(lambda s: s.encode() if isinstance(s, str) else s, otypes=[object])(want)
        got = np.vectorize(lambda s: s.encode() if isinstance(s, str) else s, otypes=[object])(got)
    assert got.shape == want.shape
    assert got.dtype == want.dtype or want.dtype == object
    np.testing.assert_array_equal(got, want)


def test_health_and_metadata(mixed_server: Served) -> None:
    client = triton.InferenceServerClient(mixed_server.host)
    assert client.is_server_live()
    assert client.is_server_ready()
    assert client.is_model_ready("mixed")
    assert not client.is_model_ready("nope")
    server = client.get_server_metadata()
    assert server["name"] == "mlpack" and "binary_tensor_data" in server["extensions"]
    meta = client.get_model_metadata("mixed")
    assert meta["versions"] == ["1"]
    assert [(t["name"], t["datatype"], t["shape"]) for t in meta["inputs"]] == [
        ("x", "FP32", [-1, 4]), ("h", "FP16", [-1, 3]), ("ids", "INT64", [-1]), ("mask", "BOOL", [-1]),
        ("text", "BYTES", [-1])]
    assert [t["name"] for t in meta["outputs"]] == ["y", "h2", "ids_next", "unmasked", "text_out"]
    with pytest.raises(triton.InferenceServerException, match="unknown model 'nope'"):
        client.get_model_metadata("nope")
    config = client.get_model_config("mixed")
    assert config["max_batch_size"] == 0 and config["platform"] == "onnxruntime_onnx"
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]][::4] == [
        ("x", "TYPE_FP32", [-1, 4]), ("text", "TYPE_STRING", [-1])]
    assert client.get_model_repository_index() == [{"name": "mixed", "version": "1", "state": "READY"}]


MIXED_TYPES = {"x": "FP32", "h": "FP16", "ids": "INT64", "mask": "BOOL", "text": "BYTES"}
SHAPES = {"x": (4,), "h": (3,), "ids": (), "mask": (), "text": ()}


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("batch", [1, 7])
def test_mixed_model_outputs_equal_onnxruntime(mixed_server: Served, model_dirs: dict[str, Path], binary: bool,
                                               batch: int) -> None:
    rng = np.random.default_rng(batch)
    feeds = {name: sample(kind, (batch, *SHAPES[name]), rng) for name, kind in MIXED_TYPES.items()}
    feeds["ids"] = rng.integers(-1000, 1000, size=(batch,), dtype=np.int64)  # +1 must not overflow
    feeds["h"] = (rng.standard_normal((batch, 3)) * 10).astype(np.float16)  # *2 must stay finite
    want = reference(model_dirs["mixed"], feeds)
    result = infer(mixed_server, "mixed", feeds, MIXED_TYPES, binary)
    assert result.get_response()["id"] == "req-1"
    for name, value in want.items():
        assert_equal(result.as_numpy(name), value)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_every_datatype_round_trips(every_server: Served, model_dirs: dict[str, Path], binary: bool) -> None:
    rng = np.random.default_rng(3)
    types = {f"in_{kind.lower()}": kind for kind in NUMPY}
    feeds = {name: sample(kind, (3, 2), rng) for name, kind in types.items()}
    if not binary:  # JSON numbers: keep floats finite and exactly representable through Python floats
        for name in ("in_fp16", "in_fp32", "in_fp64"):
            feeds[name] = feeds[name].round(2)
    want = reference(model_dirs["every"], feeds)
    result = infer(every_server, "every-dtype", feeds, types, binary)
    for name, value in want.items():
        assert_equal(result.as_numpy(name), value)


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
def test_requested_outputs_only(mixed_server: Served, model_dirs: dict[str, Path], binary: bool) -> None:
    rng = np.random.default_rng(5)
    feeds = {name: sample(kind, (2, *SHAPES[name]), rng) for name, kind in MIXED_TYPES.items()}
    feeds["ids"] = np.array([1, 2], dtype=np.int64)
    feeds["h"] = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.float16)
    result = infer(mixed_server, "mixed", feeds, MIXED_TYPES, binary, outputs=["text_out", "y"])
    assert [o["name"] for o in result.get_response()["outputs"]] == ["text_out", "y"]
    want = reference(model_dirs["mixed"], feeds)
    assert_equal(result.as_numpy("y"), want["y"])
    assert_equal(result.as_numpy("text_out"), want["text_out"])
    assert result.as_numpy("h2") is None


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests_and_responses(mixed_server: Served, model_dirs: dict[str, Path], algorithm: str) -> None:
    rng = np.random.default_rng(9)
    batch = 3000  # large enough for the response to pass the compression threshold
    feeds = {name: sample(kind, (batch, *SHAPES[name]), rng) for name, kind in MIXED_TYPES.items()}
    feeds["ids"] = np.arange(batch, dtype=np.int64)
    feeds["h"] = np.ones((batch, 3), np.float16)
    client = triton.InferenceServerClient(mixed_server.host)
    inputs = []
    for name, value in feeds.items():
        item = triton.InferInput(name, list(value.shape), MIXED_TYPES[name])
        item.set_data_from_numpy(value, binary_data=False)
        inputs.append(item)
    outputs = [triton.InferRequestedOutput(name, binary_data=False) for name in ("y", "text_out")]
    result = client.infer("mixed", inputs, outputs=outputs, request_compression_algorithm=algorithm,
                          response_compression_algorithm="gzip")
    want = reference(model_dirs["mixed"], feeds)
    assert_equal(result.as_numpy("y"), want["y"])
    assert_equal(result.as_numpy("text_out"), want["text_out"])


def test_large_answers_are_gzipped_only_when_asked(mixed_server: Served) -> None:
    import gzip
    import json

    import httpx

    batch = 3000
    body = json.dumps({"inputs": [
        {"name": "x", "datatype": "FP32", "shape": [batch, 4], "data": [0.25] * (4 * batch)},
        {"name": "h", "datatype": "FP16", "shape": [batch, 3], "data": [1] * (3 * batch)},
        {"name": "ids", "datatype": "INT64", "shape": [batch], "data": list(range(batch))},
        {"name": "mask", "datatype": "BOOL", "shape": [batch], "data": [True] * batch},
        {"name": "text", "datatype": "BYTES", "shape": [batch], "data": ["w"] * batch}]}).encode()
    url = mixed_server.url + "/v2/models/mixed/infer"
    packed = httpx.post(url, content=gzip.compress(body), headers={"Content-Encoding": "gzip",
                                                                    "Accept-Encoding": "gzip"})
    plain = httpx.post(url, content=body, headers={"Accept-Encoding": "identity"})
    assert packed.status_code == plain.status_code == 200
    assert packed.headers["content-encoding"] == "gzip" and "content-encoding" not in plain.headers
    assert int(packed.headers["content-length"]) < len(plain.content) / 4
    assert packed.json() == plain.json()  # httpx decompresses
