"""PyTorch training checkpoints in the layouts third-party code writes: the weights under `model_state` beside the
step and the optimizer state, nested two levels deep with DataParallel's `module.` prefix, EMA copies, and files that
hold objects torch's weights_only loader refuses. Real torch, a small model class written by the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mlpk.packager.convert import ConvertOptions, convert
from mlpk.packager.convert.specs import parse_input
from mlpk.packager.errors import ConfigError, InputError

pytestmark = pytest.mark.torch

_CLASS = '''
import torch
from torch import nn


class Tiny(nn.Module):
    def __init__(self, hidden: int = 8) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(4, hidden), nn.BatchNorm1d(hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
'''
_INPUT = "x:batch,4:float32"


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN201 - (trained module, optimizer, options)
    """A Tiny trained for a few steps (so BatchNorm's running stats and Adam's state are real), and the options
    that name its class file."""
    import torch

    (tmp_path / "tiny.py").write_text(_CLASS)
    monkeypatch.syspath_prepend(str(tmp_path))
    from tiny import Tiny

    torch.manual_seed(0)
    module = Tiny()
    optimizer = torch.optim.Adam(module.parameters(), lr=0.01)
    x, y = torch.randn(32, 4), torch.randint(0, 3, (32,))
    for _ in range(5):
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(module(x), y).backward()
        optimizer.step()
    options = ConvertOptions(inputs=(parse_input(_INPUT),), model_class=f"{tmp_path / 'tiny.py'}:Tiny")
    return module.eval(), optimizer, options


def test_training_checkpoint_converts_and_passes_parity(tiny, tmp_path: Path) -> None:
    import torch

    module, optimizer, options = tiny
    torch.save({"step": 5, "model_state": module.state_dict(), "optimizer_state": optimizer.state_dict()},
               tmp_path / "ckpt.pt")
    result = convert(tmp_path / "ckpt.pt", tmp_path / "out" / "m.onnx", options=options)
    assert result.parity is not None and result.parity.passed, result.parity.summary()
    assert result.notes[0] == "weights from ckpt.pt['model_state'] (9 tensors)", result.notes
    assert "weights from ckpt.pt['model_state']" in " ".join(result.card.extra["conversion"]["notes"])


def test_nested_dataparallel_weights_preferred_over_ema(tiny, tmp_path: Path) -> None:
    """{"model": {"state_dict": <module.-prefixed keys>}, "ema": ...}: the raw weights win, the prefix goes."""
    import torch

    module, _, options = tiny
    wrapped = torch.nn.DataParallel(module).state_dict()
    assert all(key.startswith("module.") for key in wrapped)
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in module.state_dict().items()}
    torch.save({"epoch": 2, "model": {"state_dict": wrapped, "config": {"hidden": 8}}, "ema": ema},
               tmp_path / "nested.pt")
    result = convert(tmp_path / "nested.pt", tmp_path / "out" / "m.onnx", options=options)
    assert result.parity is not None and result.parity.passed
    note = result.notes[0]
    assert note.startswith("weights from nested.pt['model']['state_dict'] (9 tensors, prefix 'module.' stripped)")
    assert "EMA weights at nested.pt['ema'] not used" in note
    import onnxruntime as ort

    x = np.random.default_rng(1).standard_normal((5, 4)).astype(np.float32)
    onnx_out = ort.InferenceSession(str(result.output)).run(None, {"x": x})[0]
    with torch.no_grad():
        np.testing.assert_allclose(onnx_out, module(torch.from_numpy(x)).numpy(), atol=1e-5)


def test_ema_only_checkpoint_uses_it_and_says_so(tiny, tmp_path: Path) -> None:
    import torch

    module, _, options = tiny
    torch.save({"epoch": 2, "model_ema": module.state_dict()}, tmp_path / "ema.pt")
    result = convert(tmp_path / "ema.pt", tmp_path / "out" / "m.onnx", options=options)
    assert result.parity is not None and result.parity.passed
    assert "weights from ema.pt['model_ema'] (9 tensors); EMA weights, the only ones that fit" in result.notes[0]


def test_checkpoint_that_fits_nothing_lists_keys_on_one_line(mlpack, tiny, tmp_path: Path) -> None:
    import torch

    _, optimizer, _ = tiny
    other = torch.nn.Sequential(torch.nn.Linear(4, 3))
    torch.save({"step": 5, "model_state": other.state_dict(), "optimizer_state": optimizer.state_dict()},
               tmp_path / "other.pt")
    done = mlpack("convert", "other.pt", "--model-class", "tiny.py:Tiny", "--model-args", json.dumps({"hidden": 8}),
                  "--input", _INPUT, "-o", str(tmp_path / "out" / "m.onnx"))
    assert done.returncode == ConfigError.exit_code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), done.stderr
    line = lines[0]
    assert "top-level keys ['step', 'model_state', 'optimizer_state']" in line
    assert "state dicts tried: other.pt['model_state'] (2 tensors)" in line
    assert "9 missing (body.0.bias, body.0.weight, body.1.bias, +6 more), 2 unexpected (0.bias, 0.weight)" in line
    assert "--model-class" in line and "--model-args" in line
    assert not (tmp_path / "out").exists()


def test_wrong_width_names_the_shape_mismatches(tiny, tmp_path: Path) -> None:
    import torch

    module, _, options = tiny
    torch.save({"state_dict": module.state_dict()}, tmp_path / "w.pt")
    with pytest.raises(ConfigError, match=r"does not fit .*Tiny\(\*\*\{'hidden': 16\}\).*shape mismatches "
                                          r"\(body\.0\.weight: \[8, 4\] in the file, \[16, 4\] in the class"):
        convert(tmp_path / "w.pt", tmp_path / "m.onnx",
                options=ConvertOptions(inputs=options.inputs, model_class=options.model_class,
                                       model_args={"hidden": 16}))


def test_checkpoint_without_weights_lists_keys(tiny, tmp_path: Path) -> None:
    import torch

    _, optimizer, options = tiny
    torch.save({"step": 5, "optimizer_state": optimizer.state_dict()}, tmp_path / "opt.pt")
    with pytest.raises(InputError, match=r"opt\.pt holds no state dict of tensors \(top-level keys \['step', "
                                         r"'optimizer_state'\]; looked into opt\.pt\['optimizer_state'\]"):
        convert(tmp_path / "opt.pt", tmp_path / "m.onnx", options=options)


def test_non_tensor_objects_need_trust_pickle(tiny, tmp_path: Path) -> None:
    """A numpy scalar (a common `best_metric`) is refused by weights_only=True: the refusal names it."""
    import torch

    module, _, options = tiny
    torch.save({"best_metric": np.float64(0.93), "model_state_dict": module.state_dict()}, tmp_path / "np.pt")
    with pytest.raises(ConfigError, match=r"pickled Python objects besides tensors \(first refused: "
                                          r"numpy\._core\.multiarray\.scalar.*runs code") as info:
        convert(tmp_path / "np.pt", tmp_path / "out" / "m.onnx", options=options)
    assert "--trust-pickle" in (info.value.hint or "")
    result = convert(tmp_path / "np.pt", tmp_path / "out" / "m.onnx",
                     options=ConvertOptions(inputs=options.inputs, model_class=options.model_class, trust_pickle=True))
    assert result.parity is not None and result.parity.passed
    assert result.notes[0] == "weights from np.pt['model_state_dict'] (9 tensors)"


_CONV = '''
import torch
from torch import nn


class Proposals(nn.Module):
    """Fully convolutional, like MTCNN's PNet: any H, W of at least 10 gives [batch, 2, (H-2)//2 - 2, ...]."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3), nn.PReLU(6), nn.MaxPool2d(2, 2, ceil_mode=True),
                                  nn.Conv2d(6, 8, 3), nn.PReLU(8))
        self.score = nn.Conv2d(8, 2, 1)
        self.box = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.body(x)
        return self.box(h), torch.softmax(self.score(h), dim=1)
'''


def test_free_image_axes_are_traced_at_the_sample_datas_size_and_stay_free(tmp_path: Path) -> None:
    """`--input x:batch,3,height,width` with a 40x56 sample: the model is traced at 40x56 (the generated example's
    4x4 images are too small for its kernels), and the ONNX model takes other sizes too, answering as torch does."""
    import onnxruntime as ort
    import torch

    (tmp_path / "proposals.py").write_text(_CONV)
    import importlib.util

    spec = importlib.util.spec_from_file_location("proposals", tmp_path / "proposals.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(0)
    net = module.Proposals().eval()
    torch.save(net.state_dict(), tmp_path / "pnet.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "sample.npz", x=rng.standard_normal((1, 3, 40, 56)).astype(np.float32))

    options = ConvertOptions(inputs=(parse_input("x:batch,3,height,width:float32"),),
                             model_class=f"{tmp_path / 'proposals.py'}:Proposals")
    result = convert(tmp_path / "pnet.pt", tmp_path / "pnet.onnx", options=options, sample_data=tmp_path / "sample.npz")
    assert result.parity.passed
    session = ort.InferenceSession(str(tmp_path / "pnet.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    for height, width in ((40, 56), (23, 31), (12, 12)):
        x = rng.standard_normal((2, 3, height, width)).astype(np.float32)
        with torch.no_grad():
            expected = [t.numpy() for t in net(torch.from_numpy(x))]
        got = session.run(None, {"x": x})
        for want, have in zip(expected, got, strict=True):
            assert have.shape == want.shape
            np.testing.assert_allclose(have, want, rtol=1e-4, atol=1e-5)
