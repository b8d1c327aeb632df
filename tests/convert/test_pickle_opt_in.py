"""Loading pickles runs code from the file: scikit-learn joblib files and whole pickled PyTorch modules load only
with --trust-pickle (torch's own weights_only=True rule); state dicts, TorchScript and .pt2 need no opt-in."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mlpk.packager.convert import ConvertOptions, convert
from mlpk.packager.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.sklearn
def test_joblib_needs_trust_pickle(mlpack, sklearn_models: Path, tmp_path: Path) -> None:
    done = mlpack("convert", str(sklearn_models / "breast_cancer.joblib"), "-o", str(tmp_path / "out" / "m.onnx"))
    assert done.returncode == ConfigError.exit_code
    assert "runs code from the file" in done.stderr and "--trust-pickle" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.torch
def test_whole_torch_module_needs_trust_pickle(torch_models: Path, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    monkeypatch.syspath_prepend(str(REPO / "samples"))
    from torch_cnn import DigitsCNN

    module = DigitsCNN()
    module.load_state_dict(torch.load(torch_models / "digits_cnn_state.pt", weights_only=True))
    torch.save(module, tmp_path / "whole.pt")
    npz = torch_models / "digits_nchw_test.npz"
    with pytest.raises(ConfigError, match="pickled Python objects.*runs code") as info:
        convert(tmp_path / "whole.pt", tmp_path / "out" / "m.onnx", sample_data=npz)
    assert "--trust-pickle" in (info.value.hint or "")
    assert not (tmp_path / "out").exists()
    result = convert(tmp_path / "whole.pt", tmp_path / "out" / "m.onnx", sample_data=npz,
                     options=ConvertOptions(trust_pickle=True))
    assert result.parity is not None and result.parity.passed


@pytest.mark.torch
def test_state_dict_without_class_says_what_to_pass(torch_models: Path, tmp_path: Path) -> None:
    shutil.copy(torch_models / "digits_cnn_state.pt", tmp_path / "w.pt")
    with pytest.raises(ConfigError, match="state dict.*needs its class") as info:
        convert(tmp_path / "w.pt", tmp_path / "m.onnx")
    assert "--model-class" in (info.value.hint or "")
    with pytest.raises(ConfigError, match="does not fit"):
        convert(tmp_path / "w.pt", tmp_path / "m.onnx", options=ConvertOptions(
            model_class=f"{REPO / 'samples' / 'torch_cnn.py'}:DigitsCNN", model_args={"width": 8}))
