"""When and where the inference calls of one model version run: how many at once, how many more may wait and for
how long, on the event loop or in a worker thread, and (opt-in) stacked into one run by dynamic batching.

One Scheduler per model version, used from the server's event loop only (the HTTP and gRPC servers share that
loop), so its state needs no locks; the runs themselves go to worker threads, where onnxruntime releases the GIL.

Backpressure (Triton's queue policy, in its words): each model version runs at most `concurrency` calls at once
(MLPACK_MAX_CONCURRENT_RUNS; default the CPUs this process may use, at least 2) and holds at most `queue` more
(MLPACK_MAX_QUEUE). A place is taken when a call's headers arrive (`admit`), before its body is read, so a call past
both is refused at once and costs next to nothing: HTTP 429 with Retry-After, gRPC RESOURCE_EXHAUSTED.

A call waits for a run no longer than its deadline: the server's MLPACK_REQUEST_TIMEOUT (seconds; 0: none), the
request's own v2 `timeout` parameter (microseconds, Triton's schedule-policy extension, what tritonclient's
`infer(timeout=...)` sends; it may shorten the server's, not lengthen it), and gRPC's client deadline. One still
waiting then is answered 504 / DEADLINE_EXCEEDED and never run. A run that has started is not interrupted
(onnxruntime cannot be): the deadline bounds the time spent queued. A call whose client goes away while it waits is
taken out of the queue at once, not run. Each is counted in `mlpack_requests_shed_total{model,version,reason}`
(queue_full, timeout, client_gone); `mlpack_queue_depth{model,version}` is the number of calls waiting, and
`mlpack_runs_active{model,version}` the runs in worker threads now.

Where a call runs: a model whose recent runs took under INLINE_RUN_S (an average over its last runs) runs calls of
at most INLINE_BYTES of inputs on the event loop itself, when no call waits; handing such a run to a thread and back
costs more than the run (measured in bench/serving.py). Every other call runs in a worker thread, so the loop keeps
answering (refusals, health checks, other models) while it runs. A batch is the exception on one CPU (the quota or
affinity leave this process one: a container run with --cpus 1, a pod whose CPU limit is 1): a thread there cannot
run beside the loop, only take turns with it, and the hand-over costs two thread switches and the GIL's hand-over
each way (the larger MLP of bench/overload.py, batched, at concurrency 8 on one core: 7-16 % more calls per second
when its batches run on the loop). So there a batch whose run is expected under INLINE_BATCH_S, of at most
INLINE_BYTES of inputs, runs on the loop, and at most one batch in a turn of the loop: between two, the loop reads,
refuses and answers what arrived, and it is held up by no more than one such run at a time.

Dynamic batching (opt-in per model version, `Batching`): waiting calls whose inputs agree in everything but the
first (batch) axis, and that ask for the same outputs, are stacked into one run of at most `max_batch_size` rows and
the outputs split back by rows. A batch is formed as soon as a run is free; with `max_queue_delay_s` the oldest call
may wait that long for a batch of a `preferred` size (or a full one). Calls of different shapes or outputs never
share a run. A batched run that fails, or whose outputs do not all have the batch's rows, is run again call by call,
so one call's bad input never becomes another's error and no answer is split wrongly.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from mlpk.runtimes import cpus
from mlpk.runtimes.batching import Batching, Feeds, batch_key, rows_of, split, stack
from mlpk.runtimes.errors import ClientError, QueueFull, TimedOut

if TYPE_CHECKING:
    from mlpk.runtimes.config import Settings
    from mlpk.runtimes.model import Model

INLINE_RUN_S = 0.001
INLINE_BATCH_S = 0.005  # on one CPU: the longest a batch runs on the loop (module docstring)
INLINE_BYTES = 64 * 1024
_AVERAGE_WEIGHT = 0.2  # of the newest run in the moving average of run times

Shed = Callable[[str, str, str], None]  # (model, version, reason)
Load = Callable[[str, str, int, int], None]  # (model, version, calls waiting, runs in progress)
Observe = Callable[[str, str, float, int], None]  # (model, version, run seconds, calls in the run)


@dataclass(frozen=True, slots=True)
class Limits:
    """The server's backpressure settings, the same for every model version."""

    concurrency: int = 2
    queue: int = 64
    timeout_s: float = 0.0  # 0: no server default
    chosen: bool = False  # whether MLPACK_MAX_CONCURRENT_RUNS set `concurrency` (else it is the default)
    cpus: int = 2  # the CPUs this process may use (cpus.available())

    def for_batches(self) -> Limits:
        """The limits of a batching model version: one run at a time unless chosen, since a second run at once
        would split the batches the first leaves waiting, and a run already uses every intra-op thread."""
        return self if self.chosen else dataclasses.replace(self, concurrency=1)


def limits(settings: Settings) -> Limits:
    """The Limits `settings` ask for (MLPACK_MAX_CONCURRENT_RUNS, MLPACK_MAX_QUEUE, MLPACK_REQUEST_TIMEOUT)."""
    available = cpus.available()
    return Limits(settings.max_concurrent_runs or max(2, available), settings.max_queue,
                  settings.request_timeout_s, settings.max_concurrent_runs is not None, available)


@dataclass(frozen=True, slots=True)
class Call:
    """What the transport knows of one inference call: when it arrived, and its client's own deadline (gRPC's, as a
    time.monotonic() value)."""

    arrived: float = field(default_factory=time.monotonic)
    client_deadline: float | None = None

    def deadline(self, limits: Limits, timeout_us: int | None) -> float | None:
        """The latest time.monotonic() at which this call may start to run, or None for no limit."""
        seconds = [s for s in (limits.timeout_s or None, timeout_us / 1e6 if timeout_us else None) if s]
        ends = [self.arrived + min(seconds)] if seconds else []
        if self.client_deadline is not None:
            ends.append(self.client_deadline)
        return min(ends) if ends else None


def timeout_parameter(parameters: object) -> int | None:
    """The v2 request parameter `timeout` (microseconds, a non-negative integer; 0 or absent: none)."""
    if not isinstance(parameters, dict) or parameters.get("timeout") is None:
        return None
    value = parameters["timeout"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ClientError(f"request parameter 'timeout' must be a non-negative integer of microseconds, got "
                          f"{value!r:.80}")
    return value or None


def _input_bytes(feeds: Feeds) -> int:
    size = 0
    for array in feeds.values():
        size += array.nbytes
    return size


class _Waiting:
    """One call in the queue."""

    __slots__ = ("feeds", "future", "key", "outputs", "rows", "since", "timer")

    def __init__(self, feeds: Feeds, outputs: Sequence[str], future: asyncio.Future[list[np.ndarray]],
                 batched: bool) -> None:
        self.feeds = feeds
        self.outputs = outputs
        self.rows = rows_of(feeds) if batched else -1
        self.key = batch_key(feeds, outputs) if batched and self.rows > 0 else None
        self.future = future
        self.since = time.monotonic()
        self.timer: asyncio.TimerHandle | None = None


class Scheduler:
    """The runs and waiting calls of one model version (see the module docstring). Use it from the event loop."""

    def __init__(self, model: Model, limits: Limits, executor: Executor, *, batching: Batching | None = None,
                 shed: Shed | None = None, load: Load | None = None, observe: Observe | None = None) -> None:
        self.model = model
        self.name, self.version = str(model.name), str(model.version)
        self.limits = limits
        self.batching = batching
        self.executor = executor
        self.admitted = 0  # calls between admit() and leave(): being read, waiting or running
        self.running = 0
        self.average_s = float("inf")  # moving average of run times; unknown until a run is timed
        self._queue: collections.deque[_Waiting] = collections.deque()
        self._shed = shed or (lambda *_: None)
        self._load = load or (lambda *_: None)
        self._observe = observe or (lambda *_: None)
        self._wake: asyncio.TimerHandle | None = None
        self._held = False  # a batch ran on the loop in this turn of it

    @property
    def waiting(self) -> int:
        return len(self._queue)

    def batch(self, batching: Batching) -> None:
        """Batch this version's calls from now on."""
        self.batching = batching
        self.limits = self.limits.for_batches()

    def admit(self) -> None:
        """Take a place, or raise QueueFull (429) when every run and queue place is taken; leave() gives it back."""
        if self.admitted >= self.limits.concurrency + self.limits.queue:
            self._shed(self.name, self.version, "queue_full")
            raise QueueFull(f"model '{self.name}' version {self.version} is at its limit: "
                            f"{self.limits.concurrency} runs at once and {self.limits.queue} waiting "
                            "(MLPACK_MAX_CONCURRENT_RUNS, MLPACK_MAX_QUEUE); retry after a moment")
        self.admitted += 1

    def leave(self) -> None:
        self.admitted -= 1

    def inline(self, feeds: Feeds) -> bool:
        """Whether a call of `feeds` runs on the event loop now (module docstring)."""
        if self.batching is not None or self._queue or self.running >= self.limits.concurrency or \
                self.average_s >= INLINE_RUN_S:
            return False
        return _input_bytes(feeds) <= INLINE_BYTES

    def run_inline(self, feeds: Feeds, outputs: Sequence[str]) -> list[np.ndarray]:
        """Run a call on the event loop (when inline() says so)."""
        self.running += 1
        started = time.perf_counter()
        try:
            return self.model.run(feeds, outputs)
        finally:
            self.running -= 1
            self._timed(time.perf_counter() - started, 1)

    async def run(self, feeds: Feeds, outputs: Sequence[str], deadline: float | None = None) -> list[np.ndarray]:
        """The outputs of one call, run on the loop or in a worker thread, alone or in a batch; TimedOut (504) when
        `deadline` (time.monotonic()) passes while it waits. Cancelling the caller (its client went away) takes a
        waiting call out of the queue; a call already running finishes and its answer is dropped."""
        if self.inline(feeds):
            return self.run_inline(feeds, outputs)
        loop = asyncio.get_running_loop()
        waiting = _Waiting(feeds, outputs, loop.create_future(), self.batching is not None)
        self._queue.append(waiting)
        if deadline is not None:
            waiting.timer = loop.call_later(max(0.0, deadline - time.monotonic()), self._expire, waiting)
        self._dispatch()
        try:
            return await waiting.future
        except asyncio.CancelledError:
            if self._drop(waiting):
                self._shed(self.name, self.version, "client_gone")
            raise

    def _drop(self, waiting: _Waiting) -> bool:
        """Take `waiting` out of the queue; whether it was still there."""
        if waiting.timer is not None:
            waiting.timer.cancel()
        try:
            self._queue.remove(waiting)
        except ValueError:
            return False
        self._load(self.name, self.version, len(self._queue), self.running)
        return True

    def _expire(self, waiting: _Waiting) -> None:
        waiting.timer = None
        if self._drop(waiting):
            self._shed(self.name, self.version, "timeout")
            if not waiting.future.done():
                waiting.future.set_exception(TimedOut(
                    f"model '{self.name}' version {self.version}: the call waited "
                    f"{time.monotonic() - waiting.since:.3f} s for a run and reached its deadline first (the "
                    "request's 'timeout' parameter, MLPACK_REQUEST_TIMEOUT or the client's deadline); it was not run"))

    def _dispatch(self) -> None:
        """Start runs while there are free runs and waiting calls. After a batch ran on the loop (module docstring),
        none starts before the loop's next turn."""
        while not self._held and self.running < self.limits.concurrency and self._queue:
            group = self._next_batch() if self.batching is not None else [self._queue.popleft()]
            if not group:
                break
            for waiting in group:
                if waiting.timer is not None:
                    waiting.timer.cancel()
            if self._runs_here(group):
                self._run_here(group)
                self._held = True
                asyncio.get_running_loop().call_soon(self._release)
                break
            self._start(group)
        self._load(self.name, self.version, len(self._queue), self.running)

    def _release(self) -> None:
        self._held = False
        self._dispatch()

    def _runs_here(self, group: list[_Waiting]) -> bool:
        """Whether a batch runs on the loop: on one CPU, when its run is expected short and its inputs small."""
        if self.batching is None or self.limits.cpus != 1 or self.average_s * len(group) >= INLINE_BATCH_S:
            return False
        return sum(_input_bytes(waiting.feeds) for waiting in group) <= INLINE_BYTES

    def _run_here(self, group: list[_Waiting]) -> None:
        self.running += 1
        outcome: tuple[list[Any], float] | BaseException
        try:
            outcome = self._work([(w.feeds, w.outputs) for w in group])
        except Exception as err:  # noqa: BLE001 - a bug: each call of the batch gets it, as from a worker thread
            outcome = err
        finally:
            self.running -= 1
        self._settle(group, outcome)

    def _next_batch(self) -> list[_Waiting]:
        """The calls of the next run, taken out of the queue; none while the oldest may still wait for more."""
        assert self.batching is not None
        head = self._queue[0]
        if head.key is None or head.rows >= self.batching.max_batch_size:
            return [self._queue.popleft()]
        group, rows, sizes = [head], head.rows, [head.rows]
        for waiting in list(self._queue)[1:]:
            if waiting.key == head.key and rows + waiting.rows <= self.batching.max_batch_size:
                group.append(waiting)
                rows += waiting.rows
                sizes.append(rows)
        waited = time.monotonic() - head.since
        if rows < self.batching.target and waited < self.batching.max_queue_delay_s:
            if self._wake is None:
                self._wake = asyncio.get_running_loop().call_later(
                    self.batching.max_queue_delay_s - waited, self._woken)
            return []
        if self.batching.preferred and rows not in self.batching.preferred:
            preferred = [count for count, size in enumerate(sizes, 1) if size in self.batching.preferred]
            if preferred:  # the largest preferred size these calls make; else all of them
                group = group[:preferred[-1]]
        for waiting in group:
            self._queue.remove(waiting)
        if self._wake is not None:  # the calls it waited for run now; a later head sets its own
            self._wake.cancel()
            self._wake = None
        return group

    def _woken(self) -> None:
        self._wake = None
        self._dispatch()

    def _start(self, group: list[_Waiting]) -> None:
        self.running += 1
        done = asyncio.wrap_future(self.executor.submit(self._work, [(w.feeds, w.outputs) for w in group]))
        done.add_done_callback(lambda finished: self._finished(group, finished))

    def _work(self, calls: list[tuple[Feeds, Sequence[str]]]) -> tuple[list[Any], float]:
        """In a worker thread: each call's outputs (or its ClientError), and the run's time."""
        started = time.perf_counter()
        if len(calls) > 1:
            outputs = calls[0][1]
            try:
                shares = split(self.model.run(stack([feeds for feeds, _ in calls]), outputs),
                               [rows_of(feeds) for feeds, _ in calls])
            except ClientError:
                shares = None
            if shares is not None:
                return shares, time.perf_counter() - started
        answers: list[Any] = []
        for feeds, outputs in calls:
            try:
                answers.append(self.model.run(feeds, outputs))
            except ClientError as err:
                answers.append(err)
        return answers, time.perf_counter() - started

    def _finished(self, group: list[_Waiting], finished: asyncio.Future[tuple[list[Any], float]]) -> None:
        self.running -= 1
        error = finished.exception() if not finished.cancelled() else asyncio.CancelledError()
        self._settle(group, finished.result() if error is None else error)
        self._dispatch()

    def _settle(self, group: list[_Waiting], outcome: tuple[list[Any], float] | BaseException) -> None:
        """Give each call of a finished run its answer (or its ClientError), or every call the run's error."""
        answers: list[Any] = []
        if not isinstance(outcome, BaseException):
            answers, seconds = outcome
            self._timed(seconds, len(group))
        for index, waiting in enumerate(group):
            if waiting.future.done():  # its client went away while it ran
                continue
            if isinstance(outcome, BaseException):
                waiting.future.set_exception(outcome)
            elif isinstance(answers[index], ClientError):
                waiting.future.set_exception(answers[index])
            else:
                waiting.future.set_result(answers[index])

    def _timed(self, seconds: float, calls: int) -> None:
        per_call = seconds / calls
        if self.average_s == float("inf"):
            self.average_s = per_call
        else:  # one run held up (a page fault, a busy machine) moves the average at most 4-fold up
            self.average_s += _AVERAGE_WEIGHT * (min(per_call, 4 * self.average_s) - self.average_s)
        self._observe(self.name, self.version, seconds, calls)
