"""Execution-provider planning and TensorRT options, tested up to onnxruntime's boundary on CPU (TensorRT cannot be
installed here; see DESIGN.md): the options passed, the cache paths, the fallback order, and precision from the card.
The last test drives the real session-creation fallback with a provider list that fails to load on this machine."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest

from mlpk.runtimes import config, providers
from mlpk.runtimes import model as model_module
from mlpk.runtimes.providers import CPU, CUDA, TENSORRT, TensorrtSettings
from tests.runtime import models


def test_parse_order_accepts_short_names_and_appends_cpu() -> None:
    assert providers.parse_order("tensorrt, cuda") == (TENSORRT, CUDA, CPU)
    assert providers.parse_order("cpu") == (CPU,)
    assert providers.parse_order("CUDAExecutionProvider,trt,cuda") == (CUDA, TENSORRT, CPU)


@pytest.mark.parametrize(("card", "precision"), [
    (None, "fp32"), ({}, "fp32"), ({"quantization": None}, "fp32"),
    ({"quantization": {"mode": "fp16"}}, "fp16"), ({"quantization": {"dtype": "float16"}}, "fp16"),
    ({"quantization": {"mode": "int8", "format": "QDQ"}}, "int8"), ({"quantization": {"kind": "dynamic"}}, "int8"),
    ({"quantization": {"future_key": 1}}, "fp32"),
])
def test_precision_from_card(card: dict | None, precision: str) -> None:
    assert providers.precision_from_card(card) == precision


def test_tensorrt_options_cache_paths_and_precision(tmp_path: Path) -> None:
    settings = TensorrtSettings(cache_root=tmp_path, precision="int8", model_key="abc123", device_id=1,
                                max_workspace_bytes=1 << 30, profile=("x:1x4", "x:8x4", "x:8x4"))
    options = providers.tensorrt_options(settings)
    assert options == {
        "device_id": "1",
        "trt_engine_cache_enable": "True", "trt_engine_cache_path": str(tmp_path / "abc123" / "engines"),
        "trt_timing_cache_enable": "True", "trt_timing_cache_path": str(tmp_path / "timing"),
        "trt_fp16_enable": "True", "trt_int8_enable": "True", "trt_max_workspace_size": str(1 << 30),
        "trt_profile_min_shapes": "x:1x4", "trt_profile_opt_shapes": "x:8x4", "trt_profile_max_shapes": "x:8x4",
    }
    fp32 = providers.tensorrt_options(TensorrtSettings(cache_root=tmp_path))
    assert (fp32["trt_fp16_enable"], fp32["trt_int8_enable"]) == ("False", "False")
    with pytest.raises(ValueError, match="bf8"):
        providers.tensorrt_options(TensorrtSettings(cache_root=tmp_path, precision="bf8"))


def test_profile_shapes_only_for_a_dynamic_batch_axis() -> None:
    assert providers.profile_shapes([("x", [None, 3, 224, 224]), ("k", [2])], 16) == (
        "x:1x3x224x224,k:2", "x:16x3x224x224,k:2", "x:16x3x224x224,k:2")
    assert providers.profile_shapes([("x", [None, None])], 16) is None


def test_plan_keeps_target_order_and_logs_unavailable(tmp_path: Path) -> None:
    trt = TensorrtSettings(cache_root=tmp_path / "cache", precision="fp16", model_key="k")
    plan = providers.plan((TENSORRT, CUDA, CPU), [CPU, CUDA, TENSORRT], trt)
    assert plan.names == [TENSORRT, CUDA, CPU]
    assert plan.chosen[0][1]["trt_engine_cache_path"] == str(tmp_path / "cache" / "k" / "engines")
    assert (tmp_path / "cache" / "k" / "engines").is_dir() and (tmp_path / "cache" / "timing").is_dir()
    assert plan.chosen[1][1] == {"device_id": "0"}
    assert plan.fallback().names == [CUDA, CPU]
    assert plan.fallback().fallback().names == [CPU]
    assert plan.fallback().fallback().fallback() is None

    cpu_only = providers.plan((TENSORRT, CUDA, CPU), ["AzureExecutionProvider", CPU], trt)
    assert cpu_only.names == [CPU] and cpu_only.unavailable == (TENSORRT, CUDA)
    assert providers.plan((TENSORRT,), [TENSORRT, CPU], trt).names == [TENSORRT, CPU]  # CPU always last


def test_cache_on_a_file_is_not_writable(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    plan = providers.plan((TENSORRT,), [TENSORRT, CPU], TensorrtSettings(cache_root=blocker))
    options = plan.chosen[0][1]
    assert (options["trt_engine_cache_enable"], options["trt_timing_cache_enable"]) == ("False", "False")


def test_unavailable_providers_are_left_out(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """On this CPU-only onnxruntime the target order TensorRT -> CUDA -> CPU resolves to CPU, logged as such."""
    with caplog.at_level("INFO", logger="mlpack.runtime"):
        loaded = model_module.load(config.Settings(model_path=models.mixed(tmp_path / "m")))
    assert loaded.session.get_providers() == [CPU]
    record = next(r for r in caplog.records if r.getMessage() == "model loaded")
    assert record.fields["providers_unavailable"] == [TENSORRT, CUDA]
    assert record.fields["providers_active"] == [CPU]


def test_session_creation_falls_back_provider_by_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Mocked boundary: a GPU build of onnxruntime lists TensorRT and CUDA but fails to create a session with them
    when libnvinfer / libcudart are missing on the device. No such build can be installed here, so the session
    constructor is wrapped to raise that error for those providers and call the real one otherwise; load() must
    then fall back TensorRT -> CUDA -> CPU, logging each step, and create the TensorRT cache directories."""
    real = ort.InferenceSession
    attempts: list[list[str]] = []

    def session(path: str, sess_options: object = None, providers: list | None = None, **kw: object) -> object:
        names = [p[0] if isinstance(p, tuple) else p for p in providers or []]
        attempts.append(names)
        missing = {TENSORRT: "libnvinfer.so.10", CUDA: "libcudart.so.12"}
        if names and names[0] in missing:
            raise RuntimeError(f"Failed to load library libonnxruntime_providers_x.so with error: {missing[names[0]]}"
                               ": cannot open shared object file: No such file or directory")
        return real(path, sess_options=sess_options, providers=providers, **kw)

    monkeypatch.setattr(ort, "InferenceSession", session)
    monkeypatch.setattr(ort, "get_available_providers", lambda: [TENSORRT, CUDA, CPU])
    model_dir = models.mixed(tmp_path / "m")
    with caplog.at_level("WARNING", logger="mlpack.runtime"):
        loaded = model_module.load(config.Settings(model_path=model_dir, trt_cache=tmp_path / "c"))
    assert loaded.session.get_providers() == [CPU]
    assert attempts[1:] == [[TENSORRT, CUDA, CPU], [CUDA, CPU], [CPU]]  # attempts[0]: the CPU-only probe
    warnings = [r for r in caplog.records if r.getMessage() == "execution provider failed; falling back"]
    assert [w.fields["provider"] for w in warnings] == [TENSORRT, CUDA]
    assert "libnvinfer" in warnings[0].fields["error"]
    assert loaded.sha256 is not None
    assert (tmp_path / "c" / loaded.sha256[:16] / "engines").is_dir()
