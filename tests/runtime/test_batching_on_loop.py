"""Where batches run (runtimes/scheduler.py, issue 15): on one CPU a short batch runs on the event loop, at most one in
a turn of the loop; a long one, or any batch where the process has more CPUs, runs in a worker thread. Every answer
is the model's own for that call, wherever its batch ran.

In-process, with the real models and onnxruntime: the scheduler is given the CPU count through its Limits, as the
server gives it cpus.available(). The one stand-in is `Watched`, which runs the real model and notes the thread each
run took and the loop turn it ran in; no part of the run is replaced.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, cast

import numpy as np
import onnxruntime as ort
import pytest

from mlpk.runtimes import config
from mlpk.runtimes import model as model_module
from mlpk.runtimes.batching import Batching
from mlpk.runtimes.model import Model
from mlpk.runtimes.scheduler import INLINE_BATCH_S, Limits, Scheduler
from tests.runtime import models

FAR = 60.0  # a queue delay no test waits out: a batch forms when its calls add up to the batch size


class Watched:
    """The real model; each run notes (loop turn, whether it ran on the loop's thread, rows)."""

    def __init__(self, model: Model, turns: list[int], loop_thread: int) -> None:
        self.model = model
        self.name, self.version = model.name, model.version
        self.turns = turns
        self.loop_thread = loop_thread
        self.runs: list[tuple[int, bool, int]] = []

    def run(self, feeds: dict[str, np.ndarray], outputs: Sequence[str], *, quiet: bool = False) -> list[np.ndarray]:
        rows = next(iter(feeds.values())).shape[0]
        self.runs.append((self.turns[0], threading.get_ident() == self.loop_thread, rows))
        return self.model.run(feeds, outputs, quiet=quiet)


def _scheduler(model_dir: Path, cpus: int, executor: ThreadPoolExecutor, turns: list[int],
               batch: int = 4) -> tuple[Scheduler, Watched]:
    watched = Watched(model_module.load(config.Settings(model_path=model_dir)), turns, threading.get_ident())
    return Scheduler(cast(Model, watched), Limits(cpus=cpus).for_batches(), executor,
                     batching=Batching(batch, FAR)), watched


def _count_turns(loop: asyncio.AbstractEventLoop, turns: list[int]) -> None:
    turns[0] += 1
    loop.call_soon(_count_turns, loop, turns)


@pytest.fixture(scope="module")
def seq_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.seq(tmp_path_factory.mktemp("seq") / "seq")


def _feeds(rows: int, seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal((rows, 5)).astype(np.float32)}


def _alone(model_dir: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["y", "s"], feeds)


async def _calls(scheduler: Scheduler, feeds: list[dict[str, np.ndarray]]) -> list[Any]:
    return await asyncio.gather(*(scheduler.run(feed, ["y", "s"]) for feed in feeds))


async def _known(scheduler: Scheduler, watched: Watched) -> int:
    """Batches of 4 rows until the scheduler's average run time puts a batch under a fifth of INLINE_BATCH_S (a
    session's first runs are slow); the runs made so far. A run moves the average up by at most 60 % (a fifth of the
    way to at most 4 times it), so three more runs keep a batch under INLINE_BATCH_S."""
    for _ in range(100):
        if scheduler.average_s * 4 < INLINE_BATCH_S / 5:
            return len(watched.runs)
        await _calls(scheduler, [_feeds(4, seed=0)])
    raise AssertionError(f"the seq model's runs average {scheduler.average_s * 1e3:.3f} ms a call")


@pytest.mark.parametrize(("cpus", "on_loop"), [(1, True), (2, False)])
def test_a_short_batch_runs_on_the_loop_on_one_cpu_only(seq_dir: Path, cpus: int, on_loop: bool) -> None:
    """The first run goes to a thread (its run time is not known yet); once it is known, a batch runs on the loop
    with one CPU, in a thread with two. Calls of 1, 1 and 2 rows share the run, and each gets the model's answer for
    its own rows."""
    async def main() -> None:
        turns = [0]
        _count_turns(asyncio.get_running_loop(), turns)
        with ThreadPoolExecutor(2) as executor:
            scheduler, watched = _scheduler(seq_dir, cpus, executor, turns)
            await _calls(scheduler, [_feeds(4, seed=0)])
            assert not watched.runs[0][1], "the first run went to a thread"
            known = await _known(scheduler, watched)
            feeds = [_feeds(rows, seed=rows + index) for index, rows in enumerate((1, 1, 2))]
            answers = await _calls(scheduler, feeds)
            for feed, answer in zip(feeds, answers, strict=True):
                for got, want in zip(answer, _alone(seq_dir, feed), strict=True):
                    np.testing.assert_allclose(got, want, rtol=1e-6)
        assert [(on, rows) for _, on, rows in watched.runs[known:]] == [(on_loop, 4)]

    asyncio.run(main())


def test_a_long_run_goes_to_a_worker_thread_on_one_cpu(tmp_path: Path) -> None:
    """The sleeper model, made to run far longer than INLINE_BATCH_S, with batching on: every run goes to a worker
    thread (its scalar input keeps calls from stacking, so each runs alone)."""
    model_dir = models.sleeper(tmp_path / "sleeper")
    rounds = np.array(4000, np.int64)  # 4000 products of 256x256 matrices a row: tens of milliseconds

    async def main() -> None:
        turns = [0]
        with ThreadPoolExecutor(2) as executor:
            scheduler, watched = _scheduler(model_dir, 1, executor, turns, batch=2)
            x = np.random.default_rng(0).standard_normal((1, 256)).astype(np.float32)
            for _ in range(2):
                await asyncio.gather(*(scheduler.run({"x": x, "n": rounds}, ["y"]) for _ in range(2)))
            assert scheduler.average_s > INLINE_BATCH_S, "the model is not slow enough for this test"
        assert [on for _, on, _ in watched.runs] == [False] * 4

    asyncio.run(main())


def test_one_batch_at_most_runs_on_the_loop_in_a_turn(seq_dir: Path) -> None:
    """Twelve calls arriving together make three batches; each runs on the loop in a turn of its own, so the loop
    reads and answers between them. Every call gets its own answer."""
    async def main() -> None:
        turns = [0]
        _count_turns(asyncio.get_running_loop(), turns)
        with ThreadPoolExecutor(2) as executor:
            scheduler, watched = _scheduler(seq_dir, 1, executor, turns)
            known = await _known(scheduler, watched)
            feeds = [_feeds(1, seed=100 + index) for index in range(12)]
            answers = await _calls(scheduler, feeds)
            for feed, answer in zip(feeds, answers, strict=True):
                for got, want in zip(answer, _alone(seq_dir, feed), strict=True):
                    np.testing.assert_allclose(got, want, rtol=1e-6)
        batches = watched.runs[known:]
        assert [(on, rows) for _, on, rows in batches] == [(True, 4)] * 3
        assert len({turn for turn, _, _ in batches}) == 3, f"batches ran in loop turns {batches}"

    asyncio.run(main())
