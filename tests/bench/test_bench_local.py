"""`mlpack bench` through the real console script, serving on this host (no Docker needed): a generated ONNX model,
an OCI layout whose model layer is served with --local, the one-line errors, and Ctrl-C cleaning up."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import onnx
import pytest
from onnx import TensorProto, helper

from mlpk.packager.oci import layout
from tests.bench import images
from tests.bench.test_charts import png_size
from tests.export import models


def check_levels(report: dict[str, Any], levels: list[int]) -> None:
    assert [level["concurrency"] for level in report["levels"]] == levels
    for level in report["levels"]:
        assert level["errors"] == 0 and level["first_error"] is None
        assert level["throughput_rps"] > 0 and level["requests"] > 0
        assert 0 < level["min_ms"] <= level["p50_ms"] <= level["p90_ms"] <= level["p99_ms"] <= level["max_ms"]


def check_outputs(out: Path) -> dict[str, Any]:
    report = json.loads((out / "bench.json").read_text())
    for level in report["levels"]:
        assert len(level["latencies_ms"]) == level["requests"]  # every sample is kept
    for chart in ("latency.png", "throughput.png"):
        assert png_size(out / chart) == (900, 540)
    assert (out / "server.log").stat().st_size > 0
    return report


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.mlp(tmp_path_factory.mktemp("model"), seed=0, name="scorer")


def test_bench_a_model_file(mlpack, onnx_model: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = mlpack("bench", str(onnx_model), "--duration", "2", "--concurrency", "1,2", "-o", str(out), timeout=180)
    assert done.returncode == 0, done.stderr
    assert "concurrency" in done.stdout and "cold start" in done.stdout and "p99 ms" in done.stdout
    report = check_outputs(out)
    check_levels(report, [1, 2])
    assert report["runs_in"] == "process" and report["emulated"] is False
    assert report["source"]["kind"] == "model" and report["model"]["name"] == "scorer"
    assert report["model"]["inputs"] == [{"name": "x", "dtype": "float32", "shape": ["batch", 16]}]
    assert 0 < report["cold_start_s"] < 60 and "GET /v2/health/ready" in report["cold_start_measured"]
    assert report["peak_memory"]["bytes"] > 10 * 2**20 and report["peak_memory"]["method"].startswith("VmHWM")
    assert report["size"] == {"model_bytes": onnx_model.stat().st_size, "layers": [], "compressed": 0,
                              "uncompressed": 0}
    assert report["host"]["cpus"] == os.cpu_count() and report["host"]["onnxruntime"]
    assert report["command"].startswith("mlpack bench ") and "--concurrency 1,2" in report["command"]
    assert report["lambda_init_s"] is None and report["schema"] == "mlpack.bench/v1"


def test_json_output_is_the_report_without_samples(mlpack, onnx_model: Path, tmp_path: Path) -> None:
    done = mlpack("--json", "bench", str(onnx_model), "--duration", "0.5", "-c", "1", "-o", str(tmp_path / "o"),
                  timeout=120)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    check_levels(printed, [1])
    assert "latencies_ms" not in printed["levels"][0]
    assert printed["files"]["report"] == str(tmp_path / "o" / "bench.json")


def test_an_image_layout_served_locally(mlpack, tmp_path: Path) -> None:
    """--local: the model is read out of the image's model layer and served on this host."""
    model = images.model_dir(tmp_path / "model", name="from-layer")
    oci = layout.write(images.image(model), tmp_path / "oci")
    out = tmp_path / "out"
    done = mlpack("--json", "bench", str(oci), "--local", "--duration", "0.5", "-c", "1", "-o", str(out),
                  timeout=180)
    assert done.returncode == 0, done.stderr
    report = check_outputs(out)
    check_levels(report, [1])
    assert report["runs_in"] == "process" and report["source"]["kind"] == "layout"
    assert report["model"]["name"] == "from-layer"
    assert [layer["name"] for layer in report["size"]["layers"]] == ["base", "model"]
    assert any("--local" in note for note in report["notes"])


def _taken_port() -> tuple[socket.socket, int]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    return sock, sock.getsockname()[1]


def test_bad_inputs_are_one_line_errors(mlpack, onnx_model: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    wrong_card = images.model_dir(tmp_path / "wrong-card", card_inputs=[
        {"name": "y", "dtype": "float32", "shape": ["batch", 16]}])
    unloadable = tmp_path / "unloadable.onnx"  # parses as ONNX, but onnxruntime has no kernel for its op
    graph = helper.make_graph([helper.make_node("NoSuchOp", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), unloadable)
    listener, port = _taken_port()
    cases = [
        ((str(tmp_path / "missing.onnx"),), 3, "does not exist"),
        ((str(tmp_path / "notes.txt"),), 3, "neither an ONNX model"),
        ((str(onnx_model), "--concurrency", "0"), 2, "'0' is not a positive whole number"),
        ((str(onnx_model), "--concurrency", "a"), 2, "'a' is not a positive whole number"),
        ((str(onnx_model), "--duration", "0"), 2, "--duration"),
        ((str(onnx_model), "--port", str(port)), 2, f"cannot listen on 127.0.0.1:{port}"),
        ((str(onnx_model), "--ready-timeout", "0.01"), 10, "did not answer GET /v2/health/ready within 0.01 s"),
        ((str(unloadable),), 10, "the server exited with code 1 before it answered GET /v2/health/ready: cannot start"),
        ((str(onnx_model), "--platform", "linux/arm64"), 2, "--platform linux/arm64 chooses among an image's"),
        ((str(wrong_card), "--duration", "0.5", "-c", "1"), 10, "every request failed"),
    ]
    try:
        for args, code, words in cases:
            done = mlpack("bench", *args, "-o", str(tmp_path / "out"), timeout=120)
            assert done.returncode == code, (args, done.stderr)
            assert done.stderr.startswith("error: ") and done.stderr.count("\n") == 1, (args, done.stderr)
            assert words in done.stderr and "Traceback" not in done.stderr, (args, done.stderr)
    finally:
        listener.close()
    failed = mlpack("bench", str(wrong_card), "--duration", "0.5", "-c", "1", "-o", str(tmp_path / "out"))
    assert "unknown input 'y'" in failed.stderr  # the first error's body, as the server answered it
    assert f"Hint: see its log in {tmp_path / 'out' / 'server.log'}" in mlpack(
        "bench", str(onnx_model), "--ready-timeout", "0.01", "-o", str(tmp_path / "out")).stderr
    assert not (tmp_path / "out" / "bench.json").exists()  # no report from a failed run


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_ctrl_c_stops_the_server(onnx_model: Path, tmp_path: Path, sig: signal.Signals) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "mlpk.packager.cli", "bench", str(onnx_model), "--duration", "60",
                             "-o", str(tmp_path / "out")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while not (tmp_path / "out" / "server.log").exists() or "listening" not in (
                tmp_path / "out" / "server.log").read_text():
            assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.1)
        servers = _children(proc.pid)
        assert len(servers) == 1
        time.sleep(0.5)  # into the load
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and stderr.strip().startswith(b"error: ") and b"Traceback" not in stderr, stderr
    assert not Path(f"/proc/{servers[0]}").exists(), "the server outlived mlpack bench"
