"""The server's gRPC with grpc-js, gRPC's Node.js implementation (on Node's own HTTP/2, nghttp2), unchanged, as
published on npm: health, metadata and inference through the published grpc_predict_v2.proto (loaded by
@grpc/proto-loader, not this package's descriptors), a client mistake answered INVALID_ARGUMENT with HTTP's words,
and a message past the limit RESOURCE_EXHAUSTED. A client stack nobody on this project wrote, beside grpcio's C
core (test_grpc.py) and h2 (test_grpc_wire.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from mlpk.packager import locations
from tests.conftest import free_port, require
from tests.runtime import models
from tests.runtime.conftest import Served

PACKAGES = ("@grpc/grpc-js@1.14.7", "@grpc/proto-loader@0.8.1")
PROTO = Path(__file__).resolve().parents[2] / "runtimes" / "proto" / "grpc_predict_v2.proto"

SCRIPT = r"""
const grpc = require('@grpc/grpc-js');
const loader = require('@grpc/proto-loader');
const [proto, target, xHex] = process.argv.slice(2);
const definition = loader.loadSync(proto, {keepCase: true, longs: String, defaults: true});
const service = grpc.loadPackageDefinition(definition).inference.GRPCInferenceService;
const client = new service(target, grpc.credentials.createInsecure());
const call = (method, request) => new Promise((resolve) => client[method](request, {deadline: Date.now() + 20000},
  (err, answer) => resolve(err ? {code: err.code, details: err.details} : answer)));
const hex = (buffer) => Buffer.from(buffer).toString('hex');
(async () => {
  const out = {};
  out.live = await call('ServerLive', {});
  out.ready = await call('ModelReady', {name: 'heavy'});
  const metadata = await call('ModelMetadata', {name: 'heavy'});
  out.metadata = {name: metadata.name, inputs: metadata.inputs, outputs: metadata.outputs};
  const x = Buffer.from(xHex, 'hex');
  const answer = await call('ModelInfer', {model_name: 'heavy', id: 'node-1',
    inputs: [{name: 'x', datatype: 'FP32', shape: [1, x.length / 4]}], raw_input_contents: [x]});
  out.infer = {id: answer.id, outputs: answer.outputs, raw: (answer.raw_output_contents || []).map(hex),
               code: answer.code, details: answer.details};
  out.mistake = await call('ModelInfer', {model_name: 'heavy',
    inputs: [{name: 'x', datatype: 'FP32', shape: [1, 3]}], raw_input_contents: [Buffer.alloc(12)]});
  out.large = await call('ModelInfer', {model_name: 'heavy',
    inputs: [{name: 'x', datatype: 'FP32', shape: [1, 40000]}], raw_input_contents: [Buffer.alloc(160000)]});
  console.log(JSON.stringify(out));
  client.close();
})();
"""


@pytest.fixture(scope="module")
def grpc_js() -> Path:
    """A folder with grpc-js and proto-loader installed from npm (once, into the cache)."""
    require("node")
    folder = locations.cache_dir() / "npm" / "grpc-js-1.14.7"
    if not (folder / "node_modules" / "@grpc" / "grpc-js").is_dir():
        partial = folder.with_name(folder.name + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        done = subprocess.run(["npm", "install", "--prefix", str(partial), "--no-audit", "--no-fund",
                               "--loglevel=error", *PACKAGES], capture_output=True, text=True, timeout=300,
                              check=False)
        assert done.returncode == 0, f"npm install {' '.join(PACKAGES)} failed: {done.stderr[-800:]}"
        shutil.rmtree(folder, ignore_errors=True)
        partial.rename(folder)
    (folder / "client.js").write_text(SCRIPT)
    return folder


def test_grpc_js_calls_the_server_through_the_published_proto(grpc_js: Path, server_factory: Callable[..., Served],
                                                              tmp_path_factory: pytest.TempPathFactory) -> None:
    directory = models.heavy(tmp_path_factory.mktemp("node") / "heavy", depth=1, width=64)
    port = free_port()
    server_factory(directory, MLPACK_GRPC_PORT=str(port), MLPACK_MAX_BODY_BYTES=str(64 * 1024))
    x = np.random.default_rng(0).standard_normal((1, 64)).astype(np.float32)
    done = subprocess.run(["node", str(grpc_js / "client.js"), str(PROTO), f"127.0.0.1:{port}", x.tobytes().hex()],
                          capture_output=True, text=True, timeout=120, check=False, cwd=grpc_js)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(done.stdout)
    assert out["live"] == {"live": True} and out["ready"] == {"ready": True}
    assert out["metadata"]["name"] == "heavy"
    assert out["metadata"]["inputs"] == [{"name": "x", "datatype": "FP32", "shape": ["-1", "64"]}]
    weight = numpy_helper.to_array(onnx.load(str(directory / "model.onnx")).graph.initializer[0])
    infer = out["infer"]
    assert infer["id"] == "node-1" and infer["outputs"][0]["name"] == "y", infer
    assert infer["outputs"][0]["shape"] == ["1", "64"]
    got = np.frombuffer(bytes.fromhex(infer["raw"][0]), np.float32).reshape(1, 64)
    np.testing.assert_allclose(got, x @ weight, rtol=1e-5, atol=1e-5)
    assert out["mistake"]["code"] == 3 and "[-1, 64]" in out["mistake"]["details"]  # INVALID_ARGUMENT
    assert out["large"]["code"] == 8 and "65536" in out["large"]["details"]  # RESOURCE_EXHAUSTED
