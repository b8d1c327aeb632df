"""The inference server: Open Inference Protocol v2 and TF Serving REST over HTTP (with /metrics), and the Open
Inference Protocol over gRPC, in one process on one event loop.

`python3 -m mlpk.runtimes.server` is the entrypoint of mlpack's server images; `mlpack serve` runs the same on a
host. Settings come from MLPACK_* environment variables (config.py).

Stack: HTTP/1.1 on asyncio (http.py: httptools' parser; uvloop's loop saved under 5 % of a request's CPU time in
bench/serving.py's runs, not worth its 14 MB in every image), gRPC on its own HTTP/2 on the same
loop (grpc_server.py), and the routes and handlers of api.py, shared with the Lambda handler so every transport
answers alike. Inference calls are scheduled per model version (scheduler.py: runs at once, a bounded queue,
deadlines, dynamic batching); short runs of small requests run on the loop, the others in worker threads.

Lifecycle: the model (or every version of a model repository, repository.py) loads before the port opens; the
warm-up runs in the background while liveness already answers (readiness answers 503 with the runs done so far);
each version turns ready after its own, or after a failed warm-up that needs no engine build (logged once), and stays
false with its reason when TensorRT could not build its engine. On SIGTERM readiness turns false, the listening
sockets close, requests in flight finish (up to MLPACK_GRACEFUL_TIMEOUT seconds), then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

from mlpk.runtimes import api as api_module
from mlpk.runtimes import batching, bodies, config, logs, scheduler, warmup
from mlpk.runtimes import model as model_module
from mlpk.runtimes.api import Api, Inference, Reply, error_reply
from mlpk.runtimes.budget import Budget
from mlpk.runtimes.config import Settings
from mlpk.runtimes.errors import ClientError, ModelLoadError, TooLarge
from mlpk.runtimes.http import Exchange, HttpLimits, HttpServer
from mlpk.runtimes.metrics import Metrics
from mlpk.runtimes.scheduler import INLINE_BYTES, Call, Scheduler

T = TypeVar("T")
INFERENCE = frozenset({"infer", "predict"})
METRICS_PATH = "/metrics"
# Answers are compressed only for clients that ask (Accept-Encoding, as tritonclient's
# response_compression_algorithm does) and only when large: small answers cost more to compress than to send.
COMPRESS_FROM = 64 * 1024


@dataclass(slots=True)
class _Request:
    """What the application keeps on an exchange: its route, and the scheduler place it took."""

    route: api_module.Route | None
    params: dict[str, str]
    place: Scheduler | None = None


async def _in_thread(executor: ThreadPoolExecutor, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` in a worker thread. When the caller is cancelled (its client went away), this returns only once
    the thread is done: the request's memory stays counted on the budget while a thread still holds its body."""
    future = asyncio.get_running_loop().run_in_executor(executor, work, *args)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):
            await future
        raise


def _nbytes(arrays: list[Any]) -> int:
    size = 0
    for array in arrays:
        size += array.nbytes
    return size


class Application:
    """The HTTP application (http.App) over the Api and the schedulers of its model versions."""

    def __init__(self, api: Api, settings: Settings, metrics: Metrics, schedulers: dict[tuple[str, str], Scheduler],
                 executor: ThreadPoolExecutor) -> None:
        self.api = api
        self.settings = settings
        self.metrics = metrics
        self.schedulers = schedulers
        self.limits = scheduler.limits(settings)
        self.executor = executor

    def scheduler_of(self, params: dict[str, str]) -> Scheduler:
        """The scheduler of the model version an inference path names; NotFound (404) when it names none that is
        served, so such a request is refused before its body is read."""
        found = self.api.find(params["model"], params.get("version"))
        return self.schedulers[(found.name, found.version)]

    def begin(self, exchange: Exchange) -> Reply | None:
        exchange.state = _Request(None, {})
        if exchange.path == METRICS_PATH and exchange.method == "GET":
            return None
        route, params = api_module.match(exchange.method, exchange.path)
        exchange.state.route, exchange.state.params = route, params
        declared = exchange.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.settings.max_body_bytes:
            raise TooLarge(f"request body of {declared} bytes is over the limit of {self.settings.max_body_bytes} "
                           f"bytes (MLPACK_MAX_BODY_BYTES); send smaller batches; the model expects "
                           f"{self.api.signature(params)}")
        if route.handler in INFERENCE:  # before the body is read: a refused call costs next to nothing
            place = self.scheduler_of(params)
            place.admit()
            exchange.state.place = place
        return None

    def respond(self, exchange: Exchange) -> Reply | Awaitable[Reply]:
        state: _Request = exchange.state
        if state.route is None:
            return Reply(200, self.metrics.render(), self.metrics.content_type)
        body = exchange.body
        encoding = exchange.headers.get("content-encoding")
        if encoding is not None:
            body = bodies.decode(body, encoding, self.settings.max_body_bytes)
        if body is not exchange.body:
            exchange.lease.hold(len(body), lambda: f"a request body of {len(body)} bytes once decompressed")
        if state.route.handler not in INFERENCE:
            prepared = self.api.prepare(state.route, state.params, body, exchange.headers, exchange.lease)
            assert isinstance(prepared, Reply)
            return prepared
        if len(body) > INLINE_BYTES:  # parsing it would hold the loop up: in a worker thread, with the run
            return self._infer_in_thread(exchange, state, body)
        prepared = self.api.prepare(state.route, state.params, body, exchange.headers, exchange.lease)
        if isinstance(prepared, Reply):
            return prepared
        place = self.schedulers[(prepared.served.name, prepared.served.version)]
        if place.inline(prepared.feeds):
            results = place.run_inline(prepared.feeds, prepared.outputs)
            if _nbytes(results) <= INLINE_BYTES:
                return self._compressed(prepared.answer(results), exchange)
            return self._finish_in_thread(prepared, results, exchange)
        return self._scheduled(prepared, place, exchange)

    async def _infer_in_thread(self, exchange: Exchange, state: _Request, body: bytes) -> Reply:
        assert state.route is not None
        prepared = await _in_thread(self.executor, self.api.prepare, state.route, state.params, body,
                                    exchange.headers, exchange.lease)
        if isinstance(prepared, Reply):
            return prepared
        return await self._scheduled(prepared, self.schedulers[(prepared.served.name, prepared.served.version)],
                                     exchange)

    async def _scheduled(self, prepared: Inference, place: Scheduler, exchange: Exchange) -> Reply:
        deadline = Call(exchange.arrived).deadline(self.limits, prepared.timeout_us)
        try:
            results = await place.run(prepared.feeds, prepared.outputs, deadline)
        except ClientError as err:
            return error_reply(err)
        if _nbytes(results) <= INLINE_BYTES:
            return self._compressed(prepared.answer(results), exchange)
        return await self._finish_in_thread(prepared, results, exchange)

    async def _finish_in_thread(self, prepared: Inference, results: list[Any], exchange: Exchange) -> Reply:
        return await _in_thread(self.executor, lambda: self._compressed(prepared.answer(results), exchange))

    def _compressed(self, reply: Reply, exchange: Exchange) -> Reply:
        if len(reply.body) < COMPRESS_FROM or "gzip" not in exchange.headers.get("accept-encoding", ""):
            return reply
        packer = zlib.compressobj(6, zlib.DEFLATED, 31)
        body = packer.compress(reply.body) + packer.flush()
        return Reply(reply.status, body, reply.content_type,
                     (*reply.headers, ("content-encoding", "gzip"), ("vary", "Accept-Encoding")))

    def end(self, exchange: Exchange) -> None:
        state: _Request | None = exchange.state
        if state is not None and state.place is not None:
            state.place.leave()
        endpoint = METRICS_PATH if state is not None and state.route is None and exchange.path == METRICS_PATH \
            else state.route.template if state is not None and state.route is not None else "unmatched"
        took = time.monotonic() - exchange.arrived
        self.metrics.observe_request(endpoint, exchange.method, exchange.status, took)
        if self.settings.access_log or exchange.status >= 500:
            logs.info("request", method=exchange.method, path=exchange.path, endpoint=endpoint,
                      status=exchange.status, ms=round(took * 1000, 3))


def _warm(api: Api, settings: Settings, metrics: Metrics, schedulers: dict[tuple[str, str], Scheduler],
          loop: asyncio.AbstractEventLoop) -> None:
    """Warm every loaded version up, one after the other; each turns ready after its own. A version configured for
    dynamic batching batches only once batching.check found its answers the same on its warm-up feed."""
    for served in api.repository.served:
        try:
            ready = warmup.settle(served.model, settings.warmup_runs, served.readiness)
            chosen = batching.of(served, settings)
            if chosen is not None:
                reason = batching.check(served.model, warmup.feed(served.model).values)
                fields = {"model": served.name, "version": served.version, **chosen.describe()}
                if reason is None:
                    metrics.batch_counted = True
                    loop.call_soon_threadsafe(schedulers[(served.name, served.version)].batch, chosen)
                    logs.info("dynamic batching on: stacked calls gave each call its own answer on the warm-up "
                              "feed", **fields)
                else:
                    logs.warning("dynamic batching is off for this model: " + reason, **fields)
        except Exception as err:  # noqa: BLE001 - a bug in the warm-up itself: not ready, and the endpoints say why
            logs.get().exception("warm-up crashed; the model stays not ready",
                                 extra={"fields": {"model": served.name, "version": served.version}})
            served.readiness.failed(f"the warm-up of model '{served.name}' version {served.version} crashed: {err}; "
                                    "see the server's log")
            ready = False
        metrics.set_ready(api.repository)
        if ready:
            logs.info("ready", model=served.name, version=served.version)


async def run(settings: Settings, models: Any, metrics: Metrics) -> None:
    """Serve until SIGTERM/SIGINT, then drain (module docstring)."""
    loop = asyncio.get_running_loop()
    batching.from_settings(settings)  # settings that contradict each other stop the start, before the port opens
    api = Api(models, settings.max_tensor_elements)
    limits = scheduler.limits(settings)
    executor = ThreadPoolExecutor(max_workers=limits.concurrency * len(api.repository.served) + 2,
                                  thread_name_prefix="run")
    schedulers = {(served.name, served.version): Scheduler(
        served.model, limits, executor, shed=metrics.observe_shed, load=metrics.set_load,
        observe=metrics.observe_run) for served in api.repository.served}
    budget = Budget(settings.max_buffered_bytes)
    application = Application(api, settings, metrics, schedulers, executor)
    server = HttpServer(application, HttpLimits(settings.max_body_bytes, settings.body_timeout_s,
                                                header_timeout_s=settings.body_timeout_s), budget)
    metrics.count_in_flight(lambda: server.in_flight)
    try:
        await server.listen(settings.host, settings.port)
    except OSError as err:
        raise ValueError(f"cannot listen for HTTP on {settings.host}:{settings.port}: {err.strerror or err} "
                         "(MLPACK_PORT)") from None
    grpc = None
    if settings.grpc_port:
        try:
            from mlpk.runtimes import grpc_server
        except ImportError as err:  # an image built without gRPC's wheels (hpack, protobuf)
            raise ValueError(f"MLPACK_GRPC_PORT={settings.grpc_port} asks for gRPC, but {err.name} is not installed; "
                             "set MLPACK_GRPC_PORT=0") from None
        grpc = await grpc_server.start(api, settings, budget, metrics, schedulers)
        logs.info("listening for gRPC", host=settings.host, port=settings.grpc_port, models=api.repository.names())
    logs.info("listening", host=settings.host, port=settings.port, models=api.repository.names())
    threading.Thread(target=_warm, args=(api, settings, metrics, schedulers, loop), name="warmup", daemon=True).start()
    # The objects loaded so far (modules, the models' Python side) live as long as the process: kept out of the
    # collector's generations, so its full passes stay short while requests are served.
    gc.collect()
    gc.freeze()

    stopping = asyncio.Event()

    def stop(sig: signal.Signals) -> None:
        if stopping.is_set():
            return
        api.repository.draining()
        metrics.set_ready(api.repository)
        logs.info("draining: no new connections, finishing requests in flight", signal=int(sig))
        stopping.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop, sig)
    await stopping.wait()
    grace = settings.graceful_timeout_s
    await asyncio.gather(server.drain(grace), *([grpc.stop(grace)] if grpc is not None else []))
    executor.shutdown(wait=False, cancel_futures=True)
    logs.info("server stopped", models=api.repository.names())


def serve(settings: Settings) -> None:
    """Load the models and serve them until SIGTERM/SIGINT (blocking): HTTP, and gRPC when settings.grpc_port is set."""
    logs.setup(settings.log_level)
    models = model_module.load_all(settings)
    metrics = Metrics()
    metrics.set_ready(models)
    asyncio.run(run(settings, models, metrics))


def main(argv: list[str] | None = None) -> int:
    """The image entrypoint: settings from the environment; a start failure is one JSON log line and exit 1."""
    del argv
    try:
        serve(config.from_env())
    except (ModelLoadError, ValueError) as err:
        logs.setup()
        logs.get().error(f"cannot start: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
