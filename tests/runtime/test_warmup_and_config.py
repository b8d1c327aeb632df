"""Warm-up progress logging and the environment settings, on real sessions and real environment mappings."""

from __future__ import annotations

import json
import time
import logging
from pathlib import Path

import numpy as np
import pytest

from mlpk.runtimes import config, logs, warmup
from mlpk.runtimes import model as model_module
from mlpk.runtimes.errors import ModelLoadError
from mlpk.runtimes.providers import CPU, CUDA
from tests.runtime import models


def test_warm_up_runs_and_logs_progress_with_heartbeat(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Each real run is followed by a 50 ms pause, so that a run always outlasts the 1 ms heartbeat: on a fast or
    busy machine the heartbeat thread could otherwise miss a run that finished before it was scheduled."""
    loaded = model_module.load(config.Settings(model_path=models.heavy(tmp_path / "m", depth=32, width=1024)))
    real_run = type(loaded).run

    def slow_run(self, *args, **kwargs):  # noqa: ANN001, ANN202 - the real run, then a pause
        answer = real_run(self, *args, **kwargs)
        time.sleep(0.05)
        return answer

    monkeypatch.setattr(type(loaded), "run", slow_run)
    seen: list[int] = []
    with caplog.at_level(logging.INFO, logger=logs.LOGGER):
        times = warmup.warm_up(loaded, 3, heartbeat_s=0.001, progress=lambda i, n, t: seen.append(i))
    assert seen == [1, 2, 3] and len(times) == 3 and all(t > 0 for t in times)
    done = [r for r in caplog.records if r.getMessage() == "warm-up run done"]
    assert [r.fields["run"] for r in done] == [1, 2, 3]
    beats = [r for r in caplog.records if r.getMessage() == "warm-up run still in progress"]
    assert beats and beats[0].fields["reason"] == "first run"
    line = json.loads(logs.JsonFormatter().format(done[0]))
    assert line["msg"] == "warm-up run done" and line["runs"] == 3 and line["level"] == "info"


def test_synthetic_inputs_fill_dynamic_axes(tmp_path: Path) -> None:
    loaded = model_module.load(config.Settings(model_path=models.mixed(tmp_path / "m")))
    arrays = {spec.name: warmup.synthetic(spec, batch=3) for spec in loaded.inputs}
    assert arrays["x"].shape == (3, 4) and arrays["x"].dtype == np.float32
    assert arrays["text"].dtype == object and arrays["text"].tolist() == ["", "", ""]


def test_card_name_file_stem_and_embedded_card(tmp_path: Path) -> None:
    assert model_module.load(config.Settings(model_path=models.mixed(tmp_path / "a"))).name == "mixed"
    bare = models.mixed(tmp_path / "b", card=False)
    assert model_module.load(config.Settings(model_path=bare / "model.onnx")).name == "model"
    odd = bare.parent / "odd"
    odd.mkdir()
    (odd / "My Model (v2).onnx").write_bytes((bare / "model.onnx").read_bytes())
    assert model_module.load(config.Settings(model_path=odd / "My Model (v2).onnx")).name == "My-Model-v2"
    import onnx

    proto = onnx.load(bare / "model.onnx")
    onnx.helper.set_model_props(proto, {"mlpack.card": json.dumps({"name": "embedded", "quantization": None})})
    onnx.save(proto, tmp_path / "embedded.onnx")
    loaded = model_module.load(config.Settings(model_path=tmp_path / "embedded.onnx"))
    assert loaded.name == "embedded"
    assert model_module.load(config.Settings(model_path=bare, model_name="override")).name == "override"


def test_load_errors_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="does not exist"):
        model_module.load(config.Settings(model_path=tmp_path / "missing"))
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelLoadError, match="cannot load .*junk.onnx"):
        model_module.load(config.Settings(model_path=tmp_path / "junk.onnx"))


def test_settings_from_env() -> None:
    settings = config.from_env({"MLPACK_PORT": "9000", "MLPACK_PROVIDERS": "cuda", "MLPACK_PRECISION": "fp16",
                                "MLPACK_MAX_BODY_BYTES": "10", "MLPACK_ACCESS_LOG": "1", "MLPACK_TRT_CACHE": "/v"})
    assert (settings.port, settings.providers, settings.precision) == (9000, (CUDA, CPU), "fp16")
    assert (settings.max_body_bytes, settings.access_log, str(settings.trt_cache)) == (10, True, "/v")
    assert config.from_env({}) == config.Settings()
    with pytest.raises(ValueError, match="MLPACK_PORT='http'"):
        config.from_env({"MLPACK_PORT": "http"})
    with pytest.raises(ValueError, match="MLPACK_PRECISION='bf16'"):
        config.from_env({"MLPACK_PRECISION": "bf16"})


def test_every_setting_is_documented_with_its_flag() -> None:
    """docs/serving.md's table names every MLPACK_* variable once, with the `mlpack serve` flag that sets it (or
    none where serve has no such flag)."""
    from mlpk.packager import serving
    from mlpk.packager.cli.serve import serve

    table = (Path(__file__).parents[2] / "docs" / "serving.md").read_text()
    rows = {cells[0].strip("` "): cells[1].strip("` ") for line in table.splitlines()
            if line.startswith("| `MLPACK_") for cells in [line.strip("|").split("|")]}
    flags = {opt for param in serve.params for opt in param.opts if opt.startswith("--")}
    expected = {variable: serving.flag_for(field) if serving.flag_for(field) in flags
                else "MODEL (argument)" if field == "model_path" else ""
                for field, (variable, _) in config.RULES.items()}
    assert rows == expected


def test_model_names_are_url_safe_and_the_same_for_serve_and_export() -> None:
    assert config.name_from_file("scorer") == "scorer" and config.name_from_file("My Model (v2)") == "My-Model-v2"
    assert config.name_from_file("résumé.v1") == "r-sum-.v1" and config.name_from_file("___") == "model"
    assert config.model_name("MLPACK_MODEL_NAME", "scorer-v2.1_a") == "scorer-v2.1_a"
    for bad in ("", "a/b", "two words", "-dash", "x" * 129, "../up"):
        with pytest.raises(ValueError, match="is not a model name"):
            config.model_name("MLPACK_MODEL_NAME", bad)
    from mlpk.packager.export import ExportRequest

    for file, name in (("scorer.onnx", "scorer"), ("My Model (v2).pt", "My-Model-v2")):
        assert ExportRequest(Path("/m") / file, "cpu", Path("/o")).model_name() == config.name_from_file(
            Path(file).stem) == name
    assert ExportRequest(Path("/m/x.onnx"), "cpu", Path("/o"), name="chosen").model_name() == "chosen"
