"""The inference server: Open Inference Protocol v2 and TF Serving REST over HTTP, with /metrics.

`python3 -m mlpk.runtimes.server` is the entrypoint of mlpack's server images; `mlpack serve` runs the same on a
host. Settings come from MLPACK_* environment variables (config.py).

Stack: uvicorn (with uvloop and httptools when installed) runs a Starlette app. Both are small, well-kept and pure
Python at the edges; together with onnxruntime and numpy they are all an image needs, where a framework server would
bring tens of megabytes more. Routing is done by api.ROUTES, shared with the Lambda handler, so both transports answer
alike; Starlette provides requests, responses, the lifespan and the 500 safety net.

Lifecycle: the model (or every version of a model repository, repository.py) loads before the port opens; the
warm-up runs in the background while liveness already answers (readiness answers 503 with the runs done so far);
each version turns ready after its own, or after a failed warm-up that needs no engine build (logged once), and stays
false with its reason when TensorRT could not build its engine.
On SIGTERM readiness turns false, the listening socket closes, requests in
flight finish (up to MLPACK_GRACEFUL_TIMEOUT seconds), then the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from types import FrameType
from typing import Any


import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mlpk.runtimes import api as api_module
from mlpk.runtimes import bodies, config, logs, warmup
from mlpk.runtimes import model as model_module
from mlpk.runtimes.api import Api, Reply
from mlpk.runtimes.config import Settings
from mlpk.runtimes.budget import Budget, Lease
from mlpk.runtimes.errors import BodyTimeout, ClientError, ModelLoadError, TooLarge
from mlpk.runtimes.metrics import Metrics

ROUTE_KEY = "mlpack.route"
_SLOW = frozenset({"infer", "predict"})  # handlers that run the model: off the event loop


async def read_body(request: Request, settings: Settings, lease: Lease, signature: str) -> bytes:
    """The request body, held on `lease` as it arrives (all of a declared Content-Length before any byte is read),
    refused with 413 as soon as it is known to pass the body limit, and with 408 when it has not all arrived
    within the body deadline, so neither an oversized nor a stalled upload pins memory for long."""
    limit = settings.max_body_bytes
    declared = request.headers.get("content-length")
    too_large = (f"request body of {{size}} bytes is over the limit of {limit} bytes (MLPACK_MAX_BODY_BYTES); "
                 f"send smaller batches; the model expects {signature}")
    expected = int(declared) if declared is not None and declared.isdigit() else None
    if expected is not None and expected > limit:
        raise TooLarge(too_large.format(size=declared))
    if expected is not None:
        lease.hold(expected, f"a request body of {expected} bytes")
    body = bytearray(expected or 0)
    size = 0
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            async for chunk in request.stream():
                end = size + len(chunk)
                if end > limit:
                    raise TooLarge(too_large.format(size=f"more than {limit}"))
                if expected is None:
                    lease.hold(len(chunk), f"a request body of over {size} bytes")
                    body += chunk
                elif end <= expected:
                    body[size:end] = chunk
                size = end
    except TimeoutError:
        raise BodyTimeout(f"the request body did not arrive within {settings.body_timeout_s:g} s "
                          f"({size} of {declared or 'an unknown number of'} bytes received; MLPACK_BODY_TIMEOUT); "
                          "send it at once, or in smaller requests") from None
    if expected is not None and size != expected:  # the server (h11/httptools) refuses this first; never trust it
        raise ClientError(f"the request body has {size} bytes, but its Content-Length says {expected}")
    return bytes(body) if expected is None else body  # type: ignore[return-value] - bytearray reads as bytes


class Instrumented:
    """ASGI middleware: request count and latency by endpoint and status, requests in flight, access log."""

    def __init__(self, app: ASGIApp, metrics: Metrics, access_log: bool) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, record)
        finally:
            self.metrics.in_flight.dec()
            took = time.perf_counter() - started
            endpoint = scope.get(ROUTE_KEY, "unmatched")
            self.metrics.observe_request(endpoint, scope["method"], status, took)
            if self.access_log or status >= 500:
                logs.info("request", method=scope["method"], path=scope["path"], endpoint=endpoint, status=status,
                          ms=round(took * 1000, 3))


def _response(reply: Reply) -> Response:
    return Response(reply.body, reply.status, headers=dict(reply.headers), media_type=reply.content_type)


def build_app(api: Api, settings: Settings, metrics: Metrics, *, warm: bool = True,
              budget: Budget | None = None) -> ASGIApp:
    """The ASGI application over `api`. With `warm`, the lifespan starts the warm-up and then marks it ready.
    `budget`: the bytes its requests may hold (shared with the gRPC server), else one of its own."""

    budget = budget or Budget(settings.max_buffered_bytes)

    async def dispatch(request: Request) -> Response:
        lease = budget.lease()
        try:
            return await answer(request, lease)
        finally:
            lease.release()

    async def answer(request: Request, lease: Lease) -> Response:
        try:
            if request.url.path == "/metrics" and request.method == "GET":
                request.scope[ROUTE_KEY] = "/metrics"
                return Response(metrics.render(), media_type=metrics.content_type)
            route, params = api_module.match(request.method, request.url.path)
            request.scope[ROUTE_KEY] = route.template
            body = await read_body(request, settings, lease, api.signature(params)) \
                if request.method == "POST" else b""
            decoded = bodies.decode(body, request.headers.get("content-encoding"), settings.max_body_bytes)
            if decoded is not body:
                lease.hold(len(decoded), f"a request body of {len(decoded)} bytes once decompressed")
        except ClientError as err:
            response = _response(api_module.error_reply(err))
            if request.method == "POST":  # its body may be partly unread: the connection cannot carry another request
                response.headers["connection"] = "close"
            return response
        if route.handler in _SLOW:
            reply = await run_in_threadpool(api.call, route, params, decoded, request.headers, lease)
        else:
            reply = api.call(route, params, decoded, request.headers, lease)
        return _response(reply)

    async def server_error(request: Request, exc: Exception) -> Response:
        logs.get().error("internal error", exc_info=exc, extra={"fields": {"path": request.url.path}})
        return Response(b'{"error":"internal error in the server; see its log"}', 500, media_type="application/json")

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if warm:
            threading.Thread(target=_warm, args=(api, settings, metrics), name="warmup", daemon=True).start()
        yield
        api.repository.draining()
        metrics.set_ready(api.repository)
        logs.info("server stopped", models=api.repository.names())

    async def unrouted(request: Request, exc: Exception) -> Response:
        # Starlette's `{path:path}` pattern is `.*`, which stops at a newline, so a path holding an encoded %0A
        # never reaches `dispatch` and would get Starlette's plain-text 404; route it through api.match instead,
        # which answers every path in JSON.
        return await dispatch(request)

    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    app = Starlette(routes=[StarletteRoute("/{path:path}", dispatch, methods=methods)],
                    exception_handlers={404: unrouted, Exception: server_error}, lifespan=lifespan)
    # Responses are compressed only for clients that ask (Accept-Encoding, as tritonclient's
    # response_compression_algorithm does) and only when large: small answers cost more to compress than to send.
    app.add_middleware(GZipMiddleware, minimum_size=64 * 1024)
    return Instrumented(app, metrics, settings.access_log)


def _warm(api: Api, settings: Settings, metrics: Metrics) -> None:
    """Warm every loaded version up, one after the other; each turns ready after its own warm-up."""
    for served in api.repository.served:
        try:
            ready = warmup.settle(served.model, settings.warmup_runs, served.readiness)
        except Exception as err:  # noqa: BLE001 - a bug in the warm-up itself: not ready, and the endpoints say why
            logs.get().exception("warm-up crashed; the model stays not ready",
                                 extra={"fields": {"model": served.name, "version": served.version}})
            served.readiness.failed(f"the warm-up of model '{served.name}' version {served.version} crashed: {err}; "
                                    "see the server's log")
            ready = False
        metrics.set_ready(api.repository)
        if ready:
            logs.info("ready", model=served.name, version=served.version)


class DrainingServer(uvicorn.Server):
    """uvicorn's server, which on SIGTERM/SIGINT first reports not ready, then drains as uvicorn does (the gRPC
    server, when there is one, stops taking calls then too and finishes those in flight within the same grace)."""

    def __init__(self, config: uvicorn.Config, api: Api, metrics: Metrics, grpc: Any = None,
                 grace_s: float = 30.0) -> None:
        super().__init__(config)
        self.api = api
        self.metrics = metrics
        self.grpc = grpc
        self.grace_s = grace_s
        self.grpc_stopped: threading.Event | None = None

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """uvicorn's own version re-raises the signal after the drain, so the process dies *of* SIGTERM (status
        143); a completed drain is a clean stop, so this one only routes the signals to handle_exit and exits 0."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if not self.should_exit:
            self.api.repository.draining()
            self.metrics.set_ready(self.api.repository)
            logs.info("draining: no new connections, finishing requests in flight", signal=int(sig))
            if self.grpc is not None and self.grpc_stopped is None:
                self.grpc_stopped = self.grpc.stop(self.grace_s)
        super().handle_exit(sig, frame)

    def run(self, sockets: Any = None) -> None:
        try:
            super().run(sockets)
        finally:
            if self.grpc is not None:
                (self.grpc_stopped or self.grpc.stop(self.grace_s)).wait(self.grace_s + 1)


def serve(settings: Settings) -> None:
    """Load the model and serve it until SIGTERM/SIGINT (blocking): HTTP, and gRPC when settings.grpc_port is set."""
    logs.setup(settings.log_level)
    models = model_module.load_all(settings)
    metrics = Metrics()
    metrics.set_ready(models)
    api = Api(models, settings.max_tensor_elements, metrics.observe_inference)
    budget = Budget(settings.max_buffered_bytes)
    app = build_app(api, settings, metrics, budget=budget)
    grpc = None
    if settings.grpc_port:
        try:
            from mlpk.runtimes import grpc_server
        except ImportError as err:  # an image built without grpcio
            raise ValueError(f"MLPACK_GRPC_PORT={settings.grpc_port} asks for gRPC, but {err.name} is not installed; "
                             "set MLPACK_GRPC_PORT=0") from None
        grpc = grpc_server.start(api, settings, budget, metrics)
        logs.info("listening for gRPC", host=settings.host, port=settings.grpc_port, models=models.names())
    uv_config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                               lifespan="on", server_header=False,
                               timeout_graceful_shutdown=int(max(1, settings.graceful_timeout_s)))
    logs.info("listening", host=settings.host, port=settings.port, models=models.names())
    DrainingServer(uv_config, api, metrics, grpc, settings.graceful_timeout_s).run()


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


