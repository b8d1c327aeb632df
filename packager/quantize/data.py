"""Calibration and evaluation data for quantization: the shared Feeds (packager/feeds.py, where the accepted file
layouts are described) for the model file's Signature, and the model's sample data found beside it.

The signature is the one the model's card carries (learned at convert from the graph and the user's data); a model
without a card gets it from its graph, probed with onnxruntime for shapes that run when the graph leaves them open.
"""

from __future__ import annotations

from pathlib import Path

from mlpk.packager import card as cards
from mlpk.packager import feeds, signature
from mlpk.packager.feeds import LABEL_KEYS, SINGLE_INPUT_KEYS, Feeds
from mlpk.packager.quantize import gate
from mlpk.packager.signature import Signature

Dataset = Feeds  # the name the quantize modules use for the shared value
__all__ = ["LABEL_KEYS", "SINGLE_INPUT_KEYS", "Dataset", "load", "model_signature", "sample_data", "synthetic"]


def model_signature(model_path: Path) -> Signature:
    """The signature of the ONNX file at `model_path`: its card's when the card has one with runnable example
    shapes, else the graph's, probed for example shapes with onnxruntime."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graph = signature.from_model(model)
    card = cards.from_model(model, origin=model_path.name)
    if card is not None and card.signature:
        known = Signature.from_dict(card.signature)
        if [i.name for i in known.inputs] == [i.name for i in graph.inputs] and known.runnable:
            return known
    if graph.runnable:
        return graph

    session = gate.open_session(model_path)
    names = [o.name for o in session.get_outputs()]
    probed, _ = signature.probe(graph, lambda feed: session.run(names, feed), signature.suggested_sizes(model))
    return probed


def load(path: Path, sig: Signature) -> Feeds:
    """Read an .npz file or a directory of arrays for `sig` (see packager/feeds.py)."""
    return feeds.load(path, sig)


def sample_data(model_path: Path) -> Path | None:
    """The sample data file beside the model, if there is one."""
    for name in (f"{model_path.stem}-data.npz", f"{model_path.stem}.npz", "sample-data.npz"):
        candidate = model_path.with_name(name)
        if candidate.is_file():
            return candidate
    others = sorted(model_path.parent.glob("*.npz"))
    return others[0] if len(others) == 1 else None


def synthetic(sig: Signature, count: int, seed: int = 0) -> Feeds:
    """Synthetic samples for models without data (FP16 and dynamic INT8 only: the gate then compares outputs on
    inputs that exercise the graph, but cannot measure task accuracy; reports say so)."""
    return feeds.synthesize(sig, count, seed)
