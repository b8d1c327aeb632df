"""`mlpack serve` (packager/serving.py, packager/cli/serve.py): the real console script serving a model on loopback,
answering tritonclient, stopping cleanly on SIGTERM; and its user errors."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton

from tests.conftest import free_port
from tests.runtime import models
from tests.runtime.conftest import wait_ready


def test_serve_a_model_file_then_sigterm(tmp_path: Path) -> None:
    model = models.mixed(tmp_path / "m") / "model.onnx"
    port, grpc_port = free_port(), free_port()
    exe = Path(sys.executable).with_name("mlpack")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(exe), "serve", str(model), "--port", str(port), "--grpc-port", str(grpc_port),
                                 "--name", "demo",
                                 "--providers", "cuda,cpu", "--warmup-runs", "1", "--access-log"], stdout=out,
                                stderr=subprocess.STDOUT, env={**os.environ, "MLPACK_CACHE": str(tmp_path / "c")})
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log)
        client = triton.InferenceServerClient(f"127.0.0.1:{port}")
        assert client.get_model_metadata("demo")["name"] == "demo"
        x = triton.InferInput("x", [1, 4], "FP32")
        x.set_data_from_numpy(np.ones((1, 4), np.float32))
        h = triton.InferInput("h", [1, 3], "FP16")
        h.set_data_from_numpy(np.ones((1, 3), np.float16))
        ids = triton.InferInput("ids", [1], "INT64")
        ids.set_data_from_numpy(np.array([4]))
        mask = triton.InferInput("mask", [1], "BOOL")
        mask.set_data_from_numpy(np.array([False]))
        text = triton.InferInput("text", [1], "BYTES")
        text.set_data_from_numpy(np.array(["t"], dtype=object))
        result = client.infer("demo", [x, h, ids, mask, text])
        assert result.as_numpy("ids_next").tolist() == [5]
        rpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")  # the same model over gRPC
        assert rpc.get_model_metadata("demo", as_json=True)["name"] == "demo"
        inputs = []
        for name, kind, value in (("x", "FP32", np.ones((1, 4), np.float32)), ("h", "FP16", np.ones((1, 3), np.float16)),
                                  ("ids", "INT64", np.array([4])), ("mask", "BOOL", np.array([False])),
                                  ("text", "BYTES", np.array(["t"], dtype=object))):
            inputs.append(triton_grpc.InferInput(name, list(value.shape), kind))
            inputs[-1].set_data_from_numpy(value)
        assert rpc.infer("demo", inputs).as_numpy("ids_next").tolist() == [5]
        assert '"providers_requested": ["CUDAExecutionProvider", "CPUExecutionProvider"]' in log.read_text()
        deadline = time.monotonic() + 10  # the access line is written just after the answer is sent
        while True:
            access = [json.loads(line) for line in log.read_text().splitlines() if '"msg": "request"' in line]
            infer = next((line for line in access if line["endpoint"] == "/v2/models/{model}/infer"), None)
            if infer is not None or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert infer is not None, log.read_text()
        assert (infer["method"], infer["path"], infer["status"]) == ("POST", "/v2/models/demo/infer", 200)
        assert infer["ms"] > 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()


def test_missing_model_is_a_one_line_input_error(mlpack, tmp_path: Path) -> None:
    done = mlpack("serve", str(tmp_path / "nope.onnx"))
    assert done.returncode == 3
    assert done.stderr.startswith(f"error: model {tmp_path / 'nope.onnx'} does not exist. Hint:")
    assert "Traceback" not in done.stderr


def test_unloadable_model_is_an_input_error(mlpack, tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"\x08garbage")
    done = mlpack("serve", str(tmp_path / "bad.onnx"), "--port", str(free_port()))
    assert done.returncode == 3
    assert "onnxruntime cannot load" in done.stderr and "Traceback" not in done.stderr


def test_port_in_use_is_a_config_error(mlpack, tmp_path: Path) -> None:
    model = models.mixed(tmp_path / "m")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        done = mlpack("serve", str(model), "--port", str(port))
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr and "--port" in done.stderr


def test_malformed_environment_is_a_config_error(mlpack, tmp_path: Path) -> None:
    done = mlpack("serve", str(models.mixed(tmp_path / "m")), env={"MLPACK_MAX_BODY_BYTES": "lots"})
    assert done.returncode == 2
    assert "MLPACK_MAX_BODY_BYTES='lots' is not an integer" in done.stderr


def test_grpc_port_mistakes_are_config_errors(mlpack, tmp_path: Path) -> None:
    model = models.mixed(tmp_path / "m")
    port = free_port()
    same = mlpack("serve", str(model), "--port", str(port), "--grpc-port", str(port))
    assert same.returncode == 2
    assert f"--grpc-port {port} is the HTTP --port too" in same.stderr and "Traceback" not in same.stderr
    out_of_range = mlpack("serve", str(model), "--grpc-port", "70000")
    assert out_of_range.returncode == 2 and "70000" in out_of_range.stderr and "Traceback" not in out_of_range.stderr
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        done = mlpack("serve", str(model), "--port", str(free_port()), "--grpc-port", str(taken))
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{taken}" in done.stderr and "--grpc-port" in done.stderr


def test_a_name_that_is_no_model_name_is_a_config_error(mlpack, tmp_path: Path) -> None:
    done = mlpack("serve", str(models.mixed(tmp_path / "m")), "--name", "a/b")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "--name='a/b' is not a model name" in done.stderr and "Traceback" not in done.stderr
