"""The warm-up at start: a few runs on synthetic inputs before the server reports ready.

The first run is where lazy work happens: TensorRT builds its engine (minutes on a Jetson when the cache is cold),
CUDA allocates its arena, the CPU provider sizes its buffers. Doing it before readiness means the first real request
is not the one that waits, and a heartbeat in the log shows a long engine build is progressing, not hung.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from mlpk.runtimes import logs
from mlpk.runtimes.model import Model, TensorSpec


def synthetic(spec: TensorSpec, batch: int = 1) -> np.ndarray:
    """A zero tensor (empty strings for BYTES) for `spec`, with dynamic axes set to `batch` (first) or 1."""
    shape = [(batch if index == 0 else 1) if dim is None else dim for index, dim in enumerate(spec.shape)]
    if spec.datatype == "BYTES":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, dtype=spec.dtype)


def warm_up(model: Model, runs: int, *, heartbeat_s: float = 15.0,
            progress: Callable[[int, int, float], None] | None = None) -> list[float]:
    """Run the model `runs` times on synthetic inputs, logging each run's time; returns the times in seconds.

    While a run takes longer than `heartbeat_s`, a line is logged every `heartbeat_s` seconds with the time spent,
    naming the engine build as the likely cause when TensorRT is active."""
    feeds = {spec.name: synthetic(spec) for spec in model.inputs}
    names: Sequence[str] = [spec.name for spec in model.outputs]
    building = "TensorrtExecutionProvider" in model.session.get_providers()
    times: list[float] = []
    for index in range(1, runs + 1):
        done = threading.Event()
        started = time.perf_counter()

        def beat(run: int = index, start: float = started, finished: threading.Event = done) -> None:
            while not finished.wait(heartbeat_s):
                logs.info("warm-up run still in progress", run=run, runs=runs,
                          elapsed_s=round(time.perf_counter() - start, 1),
                          reason="building the TensorRT engine (cached for the next start)" if building and run == 1
                          else "first run")

        watcher = threading.Thread(target=beat, name="warmup-heartbeat", daemon=True)
        watcher.start()
        try:
            model.run(feeds, names)
        finally:
            done.set()
            watcher.join()
        took = time.perf_counter() - started
        times.append(took)
        logs.info("warm-up run done", run=index, runs=runs, took_s=round(took, 4), model=model.name)
        if progress is not None:
            progress(index, runs, took)
    return times
