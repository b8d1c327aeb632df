"""Inputs a converter needs before there is an ONNX graph to learn a Signature from: example tensors for the
input specs the user gave (`--input`) or the framework declares (tracing a PyTorch module, for instance).

Everything after conversion reads the shared evidence layer instead: packager/signature.py (what the model takes)
and packager/feeds.py (the user's data, or synthetic data shaped by the signature).
"""

from __future__ import annotations

from collections.abc import Sequence

from mlpk.packager.card import TensorSpec
from mlpk.packager.feeds import Feeds
from mlpk.packager.signature import InputSignature, Signature, make_feed

GENERATED_BATCH = 8


def signature_of(specs: Sequence[TensorSpec]) -> Signature:
    """A signature for bare specs (no graph yet: nothing compared, no state known)."""
    return Signature(tuple(InputSignature(s.name, s.dtype, s.shape) for s in specs), (), "input specs")


def generate(specs: Sequence[TensorSpec], *, batch: int = GENERATED_BATCH, seed: int = 0) -> Feeds:
    """Deterministic inputs for `specs`: the first free axis is the batch, later free axes get 4 (the values are
    those of signature.make_array)."""
    return Feeds((make_feed(signature_of(specs), batch, seed),), None, "generated inputs", True, synthetic=True)
