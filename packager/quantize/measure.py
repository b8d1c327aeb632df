"""Size and CPU latency of a model against its baseline, measured side by side in one process.

Latency is the median of repeated batch-1 runs. The two models alternate run by run, so that load from other
processes on the machine falls on both alike; one intra-op thread by default, because a figure taken with all cores
on a shared machine measures the neighbours (and Lambda's smallest functions have one vCPU).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlpk.packager.quantize import gate
from mlpk.packager.quantize.data import Dataset

WARMUP = 5


@dataclass(frozen=True, slots=True)
class Latency:
    """Median batch-1 latency of the baseline and the candidate, in milliseconds."""

    baseline_ms: float
    candidate_ms: float
    runs: int
    threads: int

    @property
    def speedup(self) -> float:
        return self.baseline_ms / self.candidate_ms if self.candidate_ms > 0 else float("inf")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "speedup": round(self.speedup, 3)}


def model_bytes(path: Path) -> int:
    """The model's size on disk, external data files included."""
    import onnx

    size = path.stat().st_size
    model = onnx.load(str(path), load_external_data=False)
    locations = {entry.value for tensor in model.graph.initializer for entry in tensor.external_data
                 if entry.key == "location"}
    return size + sum((path.parent / loc).stat().st_size for loc in locations if (path.parent / loc).is_file())


def latency(baseline: Path, candidate: Path, data: Dataset, runs: int, threads: int,
            cpu_layout: bool = True) -> Latency:
    """Median batch-1 latency of both models on the first sample of `data`, runs interleaved."""
    feed = next(data.batches(1))
    sessions = [gate.open_session(baseline, threads, cpu_layout), gate.open_session(candidate, threads, cpu_layout)]
    times: list[list[float]] = [[], []]
    for _ in range(WARMUP):
        for session in sessions:
            session.run(None, feed)
    for _ in range(max(1, runs)):
        for index, session in enumerate(sessions):
            start = time.perf_counter()
            session.run(None, feed)
            times[index].append(time.perf_counter() - start)
    base, cand = (statistics.median(t) * 1e3 for t in times)
    return Latency(round(base, 4), round(cand, 4), max(1, runs), threads)
