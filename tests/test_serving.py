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
import tritonclient.http as triton

from tests.conftest import free_port
from tests.runtime import models
from tests.runtime.conftest import wait_ready


def test_serve_a_model_file_then_sigterm(tmp_path: Path) -> None:
    model = models.mixed(tmp_path / "m") / "model.onnx"
    port = free_port()
    exe = Path(sys.executable).with_name("mlpack")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(exe), "serve", str(model), "--port", str(port), "--name", "demo",
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
