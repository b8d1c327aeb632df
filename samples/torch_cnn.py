"""The PyTorch digits CNN's class, importable on its own so a state dict can be rebuilt:
`mlpack convert digits_cnn.safetensors --model-class samples/torch_cnn.py:DigitsCNN` (or `torch_cnn:DigitsCNN`).
"""

from __future__ import annotations

import torch
from torch import nn


class DigitsCNN(nn.Module):
    """A small CNN for 8x8 grey digits in NCHW layout; returns logits for 10 classes."""

    def __init__(self, width: int = 16, classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(2 * width * 4 * 4, 64), nn.ReLU(), nn.Linear(64, classes))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(image))
