"""Train a small transformer-encoder classifier and export it to ONNX with a dynamic batch axis.

The model is built from standard torch layers only (`nn.TransformerEncoder` of `nn.TransformerEncoderLayer`):
several layers, hidden size 256, so that INT8 dynamic quantization has real MatMul work to speed up. The data ships
with scikit-learn: each 8x8 digit image is read as a sequence of 2x2-pixel patches in raster order (16 tokens
plus a learned position embedding), so the task is real and the held-out accuracy means something.

    python samples/train_transformer.py OUT_DIR [--epochs N]

writes OUT_DIR/transformer.onnx and OUT_DIR/transformer-data.npz (held-out `x` float32 [N, 16, 4] and `y` int64).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

HIDDEN = 256
LAYERS = 4
HEADS = 4
FEEDFORWARD = 1024
PATCH = 2  # each token is a PATCH x PATCH block of the 8x8 image
SEQUENCE = (8 // PATCH) ** 2
FEATURES = PATCH * PATCH
CLASSES = 10


def build_model() -> torch.nn.Module:
    """A transformer-encoder classifier: linear token embedding + position embedding, encoder, mean pool, head."""
    import torch
    from torch import nn

    class TransformerClassifier(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(FEATURES, HIDDEN)
            self.position = nn.Parameter(torch.randn(1, SEQUENCE, HIDDEN) * 0.02)
            layer = nn.TransformerEncoderLayer(HIDDEN, HEADS, FEEDFORWARD, dropout=0.0, batch_first=True,
                                               norm_first=True)
            # enable_nested_tensor=False: the nested-tensor fast path is an inference shortcut the exporter
            # cannot trace; with it off, eval and export run the same standard layers.
            self.encoder = nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
            self.head = nn.Linear(HIDDEN, CLASSES)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(self.embed(x) + self.position)
            return self.head(hidden.mean(dim=1))

    return TransformerClassifier()


def digits_sequences(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's digits as (train_x, train_y, test_x, test_y); x is float32 [N, 16, 4] scaled to [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)  # [N, 8, 8]
    blocks = images.reshape(-1, 8 // PATCH, PATCH, 8 // PATCH, PATCH).transpose(0, 1, 3, 2, 4)
    x = np.ascontiguousarray(blocks.reshape(-1, SEQUENCE, FEATURES))
    y = digits.target.astype(np.int64)
    train_x, test_x, train_y, test_y = train_test_split(x, y, test_size=0.25, random_state=seed, stratify=y)
    return train_x, train_y, test_x, test_y


def train(epochs: int, seed: int = 0,
          limit: int | None = None) -> tuple[torch.nn.Module, np.ndarray, np.ndarray, float]:
    """Train briefly with Adam (on the first `limit` training samples if given); returns the model in eval mode,
    the held-out data and its accuracy."""
    import torch

    torch.manual_seed(seed)
    train_x, train_y, test_x, test_y = digits_sequences(seed)
    train_x, train_y = train_x[:limit], train_y[:limit]
    model = build_model()
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    inputs, labels = torch.from_numpy(train_x), torch.from_numpy(train_y)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(inputs))
        for start in range(0, len(order), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            loss_fn(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(torch.from_numpy(test_x)).argmax(1).numpy() == test_y).mean())
    return model, test_x, test_y, accuracy


def export(model: torch.nn.Module, path: Path) -> None:
    """Export with input `x` [batch, 16, 4] and output `logits` [batch, 10], batch dynamic."""
    import torch

    example = torch.zeros(2, SEQUENCE, FEATURES)
    tmp = path.with_name(path.name + ".tmp")
    torch.onnx.export(
        model, (example,), str(tmp), input_names=["x"], output_names=["logits"],
        dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}}, opset_version=17, dynamo=False,
    )
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    model, test_x, test_y, accuracy = train(args.epochs)
    export(model, args.out_dir / "transformer.onnx")
    np.savez(args.out_dir / "transformer-data.npz", x=test_x, y=test_y)
    print(f"held-out accuracy {accuracy:.3f} on {len(test_y)} digits; wrote {args.out_dir / 'transformer.onnx'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
