"""Dynamic batching: which calls may share one run of a model, how their inputs are stacked and their outputs split,
and the check that a model computes the same answer for a call whether or not others share its run.

Opt-in per model version (off by default: on a CPU a batch trades latency for throughput, and only pays where a run
is dominated by reading the weights, as docs/serving.md measures): MLPACK_MAX_BATCH_SIZE (with
MLPACK_BATCH_DELAY_US and MLPACK_PREFERRED_BATCH_SIZES) for every model a server serves, or a model's own
`config.json` in a model repository, in Triton's field names:

    {"max_batch_size": 16, "dynamic_batching": {"preferred_batch_size": [4, 8],
                                                 "max_queue_delay_microseconds": 200}}

Only a model whose every input and output has a dynamic first axis (the batch axis, in the model's own shapes:
unlike Triton's, max_batch_size does not remove it from the dims) can batch; for any other the setting is refused
with a warning and the model serves unbatched. Before a batched model serves batches, `check` runs its warm-up feed
alone, a second feed alone, and both stacked: a model whose answer for one call depends on the other rows of its run
(a normalization over the batch, a first axis that is not a batch) serves unbatched, with the reason logged.
Stacked floats may differ from a lone run's in their last bits (the kernels block the rows differently), as in any
batching server; `check` allows that much (rtol 1e-4, atol 1e-5) and nothing more.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlpk.runtimes import logs
from mlpk.runtimes.errors import ClientError, ModelLoadError

if TYPE_CHECKING:
    from mlpk.runtimes.config import Settings
    from mlpk.runtimes.model import Model
    from mlpk.runtimes.repository import Served

Feeds = Mapping[str, np.ndarray]
RTOL, ATOL = 1e-4, 1e-5
FORM = ('{"max_batch_size": 16, "dynamic_batching": {"preferred_batch_size": [4, 8], '
        '"max_queue_delay_microseconds": 200}}')


@dataclass(frozen=True, slots=True)
class Batching:
    """Dynamic batching of one model version: at most `max_batch_size` rows a run; the oldest waiting call may wait
    up to `max_queue_delay_s` for a batch of one of the `preferred` sizes (or of max_batch_size)."""

    max_batch_size: int
    max_queue_delay_s: float = 0.0
    preferred: tuple[int, ...] = ()

    @property
    def target(self) -> int:
        """The rows a batch is formed at without waiting longer."""
        return max(self.preferred) if self.preferred else self.max_batch_size

    def describe(self) -> dict[str, Any]:
        return {"max_batch_size": self.max_batch_size, "max_queue_delay_us": round(self.max_queue_delay_s * 1e6),
                "preferred_batch_sizes": list(self.preferred)}


def from_settings(settings: Settings) -> Batching | None:
    """The server-wide batching MLPACK_MAX_BATCH_SIZE asks for (0: none); ValueError for settings that do not go
    together."""
    if not settings.max_batch_size:
        if settings.preferred_batch_sizes or settings.batch_delay_us:
            raise ValueError("MLPACK_PREFERRED_BATCH_SIZES and MLPACK_BATCH_DELAY_US shape dynamic batching, which "
                             "MLPACK_MAX_BATCH_SIZE turns on; set it too (for example 16)")
        return None
    too_large = [size for size in settings.preferred_batch_sizes if size > settings.max_batch_size]
    if too_large:
        raise ValueError(f"MLPACK_PREFERRED_BATCH_SIZES has {too_large}, over MLPACK_MAX_BATCH_SIZE="
                         f"{settings.max_batch_size}")
    return Batching(settings.max_batch_size, settings.batch_delay_us / 1e6, settings.preferred_batch_sizes)


def from_config(file: Path, document: Mapping[str, Any]) -> Batching | None:
    """The batching of a model's config.json (module docstring); None without `dynamic_batching`; ModelLoadError
    naming the file and the form when it is malformed."""
    section = document.get("dynamic_batching")
    if section is None:
        return None
    size = document.get("max_batch_size")
    if not isinstance(section, dict) or isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ModelLoadError(f"{file}: dynamic_batching needs a max_batch_size of at least 1 and an object of "
                             f"settings; got max_batch_size {size!r}, dynamic_batching {section!r}; expected {FORM}")
    delay = section.get("max_queue_delay_microseconds", 0)
    preferred = section.get("preferred_batch_size", [])
    if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
        raise ModelLoadError(f"{file}: dynamic_batching.max_queue_delay_microseconds is {delay!r}; expected a whole "
                             f"number of at least 0, as in {FORM}")
    if not isinstance(preferred, list) or not all(isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= size
                                                  for n in preferred):
        raise ModelLoadError(f"{file}: dynamic_batching.preferred_batch_size is {preferred!r}; expected a list of "
                             f"sizes from 1 to max_batch_size {size}, as in {FORM}")
    return Batching(size, delay / 1e6, tuple(sorted(set(preferred))))


def unbatchable(model: Model) -> str | None:
    """Why `model` cannot batch (an input or output without a dynamic first axis), or None when it can."""
    for kind, specs in (("input", model.inputs), ("output", model.outputs)):
        for spec in specs:
            if not spec.shape or spec.shape[0] is not None:
                return (f"its {kind} '{spec.name}' has shape {spec.v2_shape}, without a dynamic first (batch) axis")
    return None


def of(served: Served, settings: Settings) -> Batching | None:
    """The batching `served` is configured for (its config.json's, else the server's), when its model can batch."""
    chosen = served.batching if served.batching is not None else from_settings(settings)
    if chosen is None:
        return None
    reason = unbatchable(served.model)
    if reason is not None:
        logs.warning("dynamic batching is off for this model: " + reason, model=served.name, version=served.version)
        return None
    return chosen


def batch_key(feeds: Feeds, outputs: Sequence[str]) -> tuple[Any, ...]:
    """What calls must share to be stacked: each input's name, dtype and shape past the first axis, and the outputs."""
    return (tuple((name, array.dtype.str, array.shape[1:]) for name, array in sorted(feeds.items())),
            tuple(outputs))


def rows_of(feeds: Feeds) -> int:
    """The batch rows of a call: its inputs' shared first axis; -1 when they share none (it is run alone)."""
    sizes = {array.shape[0] if array.ndim else -1 for array in feeds.values()}
    return sizes.pop() if len(sizes) == 1 and -1 not in sizes else -1


def stack(calls: Sequence[Feeds]) -> dict[str, np.ndarray]:
    """The inputs of several calls as one, stacked on the first axis in the calls' order."""
    return {name: np.concatenate([feeds[name] for feeds in calls]) for name in calls[0]}


def split(results: Sequence[np.ndarray], rows: Sequence[int]) -> list[list[np.ndarray]] | None:
    """Each call's share of a stacked run's outputs, by its rows; None when an output does not have every row on
    its first axis (then it cannot be split by calls)."""
    total = sum(rows)
    if any(result.ndim == 0 or result.shape[0] != total for result in results):
        return None
    bounds = np.cumsum([0, *rows])
    return [[result[start:end] for result in results] for start, end in itertools.pairwise(bounds)]


def _other(array: np.ndarray) -> np.ndarray:
    """A second feed unlike the first: rows reversed, and floats moved too (integer inputs may be indices or
    categories, whose valid values the server cannot know)."""
    flipped = array[::-1].copy()
    if array.dtype.kind == "f":
        return (flipped * 0.5 + 0.25).astype(array.dtype)
    return flipped


def _same(got: np.ndarray, want: np.ndarray) -> bool:
    if got.shape != want.shape:
        return False
    if got.dtype.kind == "f" and want.dtype.kind == "f":
        return bool(np.allclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True))
    return bool(np.array_equal(got, want)) if got.dtype != object else got.tolist() == want.tolist()


def check(model: Model, feeds: Feeds) -> str | None:
    """Why stacking calls would change `model`'s answers on `feeds` (the warm-up feed; module docstring), or None
    when the feed run alone, a second feed run alone and both stacked agree row for row."""
    rows = rows_of(feeds)
    if rows < 1:
        return "its warm-up feed has no shared first axis to stack on"
    other = {name: _other(array) for name, array in feeds.items()}
    names = [spec.name for spec in model.outputs]
    try:
        alone = [model.run(feeds, names, quiet=True), model.run(other, names, quiet=True)]
    except ClientError as err:
        return f"its warm-up feed does not run, so stacking could not be checked: {err.message}"
    try:
        stacked = model.run(stack([feeds, other]), names, quiet=True)
    except ClientError as err:
        return f"its warm-up feed does not run stacked: {err.message}"
    shares = split(stacked, [rows, rows])
    if shares is None:
        sizes = ", ".join(f"'{name}' {list(result.shape)}" for name, result in zip(names, stacked, strict=True))
        return f"its outputs do not keep the stacked rows on their first axis ({sizes} for {2 * rows} rows)"
    for call, (share, lone) in enumerate(zip(shares, alone, strict=True)):
        for name, got, want in zip(names, share, lone, strict=True):
            if not _same(got, want):
                return (f"output '{name}' of a call changes when another call shares its run (call {call + 1} of 2 "
                        f"on its warm-up feed), so its first axis is not a batch of independent rows")
    return None
