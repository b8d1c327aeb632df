"""Warm-up feeds for models nobody here wrote, on real servers and real sessions: a voice-activity model whose scalar
`sr` must be 8000 or 16000 (the card lists valid values), a detector whose H and W must be multiples of 32 (the card
gives an example shape, or nothing: then the zero warm-up fails and the server turns ready with one warning), a
sample feed from warmup.npz, the per-model file rules, and the TensorRT case, where a failed warm-up keeps the model
not ready with its reason (tested up to the provider boundary: no GPU here)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlpk.runtimes import api, config, logs, repository, warmup
from mlpk.runtimes import model as model_module
from mlpk.runtimes.providers import CPU, CUDA, TENSORRT
from tests.runtime import models
from tests.runtime.conftest import Served


def warnings_of(served: Served) -> list[dict]:
    return [line for line in served.log_lines() if line["level"] == "warning"]


def infer(served: Served, model: str, inputs: list[dict]) -> httpx.Response:
    return httpx.post(f"{served.url}/v2/models/{model}/infer", json={"inputs": inputs}, timeout=30)


def test_scalar_and_state_inputs_warm_up_with_the_cards_values(server_factory: Callable[..., Served],
                                                               tmp_path: Path) -> None:
    served = server_factory(models.vad(tmp_path / "vad"))
    lines = served.log_lines()
    runs = [line for line in lines if line["msg"] == "warm-up run done"]
    assert [line["run"] for line in runs] == [1, 2] and warnings_of(served) == []
    x = np.linspace(-1, 1, 2 * 256, dtype=np.float32).reshape(2, 256) + 1
    answer = infer(served, "vad", [
        {"name": "input", "datatype": "FP32", "shape": [2, 256], "data": x.reshape(-1).tolist()},
        {"name": "state", "datatype": "FP32", "shape": [2, 2, 128], "data": [0.0] * 512},
        {"name": "sr", "datatype": "INT64", "shape": [], "data": [8000]}])
    assert answer.status_code == 200, answer.text
    output = next(o for o in answer.json()["outputs"] if o["name"] == "output")
    np.testing.assert_allclose(output["data"], x.mean(axis=1) * models.VAD_GAIN[8000], rtol=1e-6)


def test_shape_rules_warm_up_with_the_cards_example_shape(server_factory: Callable[..., Served],
                                                          tmp_path: Path) -> None:
    served = server_factory(models.grid32(tmp_path / "grid"))
    assert warnings_of(served) == []
    assert [line["run"] for line in served.log_lines() if line["msg"] == "warm-up run done"] == [1, 2]
    answer = infer(served, "grid32", [{"name": "images", "datatype": "FP32", "shape": [1, 3, 32, 64],
                                       "data": [0.5] * (3 * 32 * 64)}])
    assert answer.status_code == 200, answer.text
    assert answer.json()["outputs"][0]["shape"] == [1, 3, 1, 2]


def test_without_hints_a_failed_warm_up_is_one_warning_and_the_server_serves(
        server_factory: Callable[..., Served], tmp_path: Path) -> None:
    served = server_factory(models.grid32(tmp_path / "bare", hints=False))  # waits for a 200 from ready
    assert httpx.get(served.url + "/v2/health/ready").json() == {"ready": True}
    [warning] = warnings_of(served)  # every line is JSON (onnxruntime's own plain-text error line is silenced)
    assert warning["msg"].startswith("warm-up failed; serving without a warm-up")
    assert warning["model"] == "grid32" and warning["origin"] == warmup.SYNTHETIC
    assert warning["inputs"] == [{"name": "images", "dtype": "float32", "shape": [1, 3, 1, 1]}]
    assert "Reshape" in warning["reason"] and "\n" not in warning["reason"]
    assert warning["providers_active"] == [CPU]
    assert not any(line["msg"] == "warm-up run done" for line in served.log_lines())
    answer = infer(served, "grid32", [{"name": "images", "datatype": "FP32", "shape": [1, 3, 64, 32],
                                       "data": [1.0] * (3 * 64 * 32)}])
    assert answer.status_code == 200, answer.text


def test_tensorrt_active_a_failed_warm_up_keeps_the_model_not_ready_with_its_reason(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The session runs on CPU (no GPU here); only the provider list that `settle` decides on says TensorRT, which
    is what a TensorRT session's get_providers() returns. The rest is the real path the server takes."""
    loaded = model_module.load(config.Settings(model_path=models.grid32(tmp_path / "bare", hints=False)))
    served = api.Api(loaded, 1000)
    with caplog.at_level(logging.INFO, logger=logs.LOGGER):
        ready = warmup.settle(loaded, 2, served.find("grid32").readiness, active=[TENSORRT, CUDA, CPU])
    assert ready is False
    failures = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(failures) == 1 and failures[0].levelname == "ERROR"
    assert "Reshape" in failures[0].fields["reason"]
    for path in ("/v2/health/ready", "/v2/models/grid32/ready", "/v2/models/grid32/versions/1/ready"):
        route, params = api.match("GET", path)
        reply = served.call(route, params, b"", {})
        body = json.loads(reply.body)
        assert reply.status == 503 and body["ready"] is False, path
        assert "warm-up of model 'grid32' failed" in body["error"] and "Reshape" in body["error"]
        assert "'images' float32 [1, 3, 1, 1]" in body["error"] and "TensorRT" in body["error"]
    route, params = api.match("POST", "/v2/repository/index")
    assert json.loads(served.call(route, params, b"", {}).body)[0]["state"] == "UNAVAILABLE"
    assert warmup.engine_build([CUDA, CPU]) is False and warmup.engine_build([TENSORRT, CPU]) is True
    cpu = api.Api(loaded, 1000)
    assert warmup.settle(loaded, 1, cpu.find("grid32").readiness, active=[CUDA, CPU]) is True  # CUDA: serve anyway
    assert cpu.find("grid32").readiness.answer("grid32") == (200, {"ready": True})


def test_readiness_says_the_warm_up_is_in_progress() -> None:
    readiness = repository.Readiness()
    readiness.warming(3, 120)
    status, body = readiness.answer("m")
    assert status == 503 and body["warmup"] == {"runs_done": 3, "runs": 120}
    assert body["error"] == "model 'm' is warming up: 3 of 120 runs done"
    readiness.draining()
    readiness.ready()  # a warm-up ending during a drain does not turn it ready again
    assert readiness.answer("m")[0] == 503 and "shutting down" in readiness.answer("m")[1]["error"]


def test_the_sample_feed_comes_first_and_names_its_origin(tmp_path: Path) -> None:
    directory = models.vad(tmp_path / "vad", hints=False)
    card = json.loads((directory / "model-card.json").read_text())
    card["warmup"] = {"file": "warmup.npz", "origin": "sample data speech.npz"}
    (directory / "model-card.json").write_text(json.dumps(card))
    x = np.full((3, 100), 0.25, np.float64)  # float64 in the file: cast to the input's float32
    np.savez(directory / "warmup.npz", input=x, state=np.zeros((2, 3, 128), np.float32), sr=np.array(16000))
    loaded = model_module.load(config.Settings(model_path=directory))
    chosen = warmup.feed(loaded)
    assert chosen.origin == "warmup.npz (sample data speech.npz)"
    assert chosen.describe() == [{"name": "input", "dtype": "float32", "shape": [3, 100]},
                                 {"name": "state", "dtype": "float32", "shape": [2, 3, 128]},
                                 {"name": "sr", "dtype": "int64", "shape": []}]
    assert len(warmup.warm_up(loaded, 1)) == 1
    np.savez(directory / "warmup.npz", input=x, state=np.zeros((2, 3, 128), np.float32))  # sr missing
    partial = warmup.feed(model_module.load(config.Settings(model_path=directory)))
    assert partial.origin == f"warmup.npz (sample data speech.npz) + {warmup.SYNTHETIC}"
    assert partial.values["sr"].shape == () and partial.values["input"].shape == (3, 100)


def test_card_values_and_example_shapes_make_the_feed(tmp_path: Path) -> None:
    loaded = model_module.load(config.Settings(model_path=models.vad(tmp_path / "vad")))
    chosen = warmup.feed(loaded)
    assert chosen.origin == "card signature"
    assert chosen.values["sr"].tolist() == 16000 and chosen.values["sr"].dtype == np.int64
    noise = chosen.values["input"]
    assert noise.shape == (1, 512) and noise.dtype == np.float32 and 0 < np.abs(noise).max() < 1
    np.testing.assert_array_equal(noise, warmup.feed(loaded).values["input"])  # deterministic
    bare = model_module.load(config.Settings(model_path=models.vad(tmp_path / "bare", hints=False)))
    with pytest.raises(warmup.WarmupFailed, match=r"on synthetic .*'sr' int64 \[\].*Gather"):
        warmup.warm_up(bare, 2)


def test_per_model_cards_and_feeds_beside_each_file(tmp_path: Path) -> None:
    """Two models in one folder: each reads STEM.card.json and STEM.warmup.npz; the shared model-card.json and
    warmup.npz belong to no one of them; with one model in the folder they are its own."""
    folder = models.grid32(tmp_path / "two", hints=False)
    (folder / "model.onnx").rename(folder / "a.onnx")
    models.grid32(tmp_path / "other", hints=False)
    (tmp_path / "other" / "model.onnx").rename(folder / "b.onnx")
    (folder / "model-card.json").write_text(json.dumps({"name": "shared"}))
    np.savez(folder / "warmup.npz", images=np.zeros((1, 3, 1, 1), np.float32))
    (folder / "a.card.json").write_text(json.dumps({"name": "alpha"}))
    np.savez(folder / "a.warmup.npz", images=np.ones((1, 3, 32, 32), np.float32))
    alpha = model_module.load(config.Settings(model_path=folder / "a.onnx"))
    beta = model_module.load(config.Settings(model_path=folder / "b.onnx"))
    assert (alpha.name, beta.name) == ("alpha", "b")  # b: no card of its own, the shared one is not its
    assert warmup.warmup_file(alpha) == folder / "a.warmup.npz" and warmup.warmup_file(beta) is None
    assert warmup.feed(alpha).origin == "a.warmup.npz" and warmup.feed(beta).origin == warmup.SYNTHETIC
    (folder / "b.onnx").unlink()
    (folder / "a.card.json").unlink()
    (folder / "a.warmup.npz").unlink()
    alone = model_module.load(config.Settings(model_path=folder / "a.onnx"))
    assert alone.name == "shared" and warmup.warmup_file(alone) == folder / "warmup.npz"


LAMBDA_INIT = """
import json
from mlpk.runtimes import lambda_handler as h
event = {"inputs": [{"name": "images", "datatype": "FP32", "shape": [1, 3, 32, 32], "data": [1.0] * 3072}]}
print(json.dumps({"ready": h.MODELS.is_ready(), "answer": h.handler(event)["outputs"][0]["shape"]}))
"""


@pytest.mark.parametrize("hints", [True, False], ids=["card", "bare"])
def test_lambda_init_warms_up_with_the_same_feeds(tmp_path: Path, hints: bool) -> None:
    """The handler module as Lambda imports it at init, in a fresh interpreter (test_lambda_rie runs it under
    awslambdaric)."""
    env = {**os.environ, "MLPACK_MODEL_DIR": str(models.grid32(tmp_path / "m", hints=hints))}
    done = subprocess.run([sys.executable, "-c", LAMBDA_INIT], env=env, capture_output=True, text=True, timeout=60,
                          check=True)
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.strip()]
    assert json.loads(done.stdout) == {"ready": True, "answer": [1, 3, 1, 1]}
    warned = [line for line in lines if line["level"] == "warning"]
    if hints:
        assert warned == [] and any(line["msg"] == "warm-up run done" for line in lines)
    else:
        assert len(warned) == 1 and warned[0]["origin"] == warmup.SYNTHETIC
