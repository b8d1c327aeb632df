"""Models the quantization tests build (generated, never committed): trained on scikit-learn's digits with torch.

- `digits_cnn`: the sample digits CNN (samples/torch_cnn.py) trained briefly, exported to ONNX with a dynamic batch;
- `fragile_mlp`: an MLP on flattened digits in which a few hidden channels were scaled by OUTLIER_SCALE and their
  outgoing weights divided by it. In FP32 the function is unchanged (ReLU is positively homogeneous), but the
  activation tensor now holds values ~1000x larger than its neighbours, the outlier pattern of LLM activations
  that per-tensor INT8 activation scales cannot represent.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

REPO = Path(__file__).resolve().parents[2]
OUTLIER_SCALE = 1000.0


def digits(flat: bool, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_x, train_y, test_x, test_y); x is NCHW float32 in [0, 1], or flat [N, 64]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    data = load_digits()
    images = (data.images / 16.0).astype(np.float32)
    x = images.reshape(len(images), 64) if flat else images[:, None]
    train_x, test_x, train_y, test_y = train_test_split(x, data.target.astype(np.int64), test_size=0.25,
                                                        random_state=seed, stratify=data.target)
    return train_x, train_y, test_x, test_y


def _train(model: torch.nn.Module, x: np.ndarray, y: np.ndarray, epochs: int) -> None:
    import torch

    torch.manual_seed(0)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        for batch in torch.randperm(len(xs)).split(64):
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(xs[batch]), ys[batch]).backward()
            optimizer.step()
    model.eval()


def _export(model: torch.nn.Module, example: np.ndarray, name: str, path: Path) -> None:
    import torch

    torch.onnx.export(model, (torch.from_numpy(example[:2]),), str(path), input_names=[name], output_names=["logits"],
                      dynamic_axes={name: {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False)


def digits_cnn(out: Path, epochs: int = 10) -> tuple[Path, Path]:
    """The sample digits CNN as ONNX, and its held-out data (.npz: `image`, `labels`)."""
    sys.path.insert(0, str(REPO / "samples"))
    from torch_cnn import DigitsCNN

    import torch

    train_x, train_y, test_x, test_y = digits(flat=False)
    torch.manual_seed(0)  # the initial weights too: the same model every session
    model = DigitsCNN(width=16)
    _train(model, train_x, train_y, epochs)
    onnx_path, data_path = out / "digits_cnn.onnx", out / "digits_test.npz"
    _export(model, test_x, "image", onnx_path)
    np.savez(data_path, image=test_x, labels=test_y)
    return onnx_path, data_path


def fragile_mlp(out: Path, outliers: int = 2, epochs: int = 15) -> tuple[Path, Path]:
    """The outlier MLP as ONNX (input `x` [batch, 64]) and its held-out data (.npz: `x`, `labels`)."""
    import torch
    from torch import nn

    train_x, train_y, test_x, test_y = digits(flat=True)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 10))
    _train(model, train_x, train_y, epochs)
    with torch.no_grad():
        hidden = model[:4](torch.from_numpy(train_x))
        busiest = hidden.mean(0).argsort(descending=True)[:outliers]  # channels that are on for most inputs
        model[2].weight[busiest] *= OUTLIER_SCALE
        model[2].bias[busiest] *= OUTLIER_SCALE
        model[4].weight[:, busiest] /= OUTLIER_SCALE
    onnx_path, data_path = out / "fragile.onnx", out / "fragile_test.npz"
    _export(model, test_x, "x", onnx_path)
    np.savez(data_path, x=test_x, labels=test_y)
    return onnx_path, data_path


def transformer(out: Path, epochs: int = 2, limit: int = 384) -> tuple[Path, Path]:
    """The sample transformer-encoder classifier (samples/train_transformer.py), trained briefly on part of the
    training split (enough for a model that is no longer random, in seconds), and its held-out data."""
    sys.path.insert(0, str(REPO / "samples"))
    import train_transformer

    model, test_x, test_y, _ = train_transformer.train(epochs, limit=limit)
    onnx_path, data_path = out / "transformer.onnx", out / "transformer-data.npz"
    train_transformer.export(model, onnx_path)
    np.savez(data_path, x=test_x, y=test_y)
    return onnx_path, data_path
