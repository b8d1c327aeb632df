"""The Open Inference Protocol over gRPC: KServe v2's GRPCInferenceService (grpc_predict_v2.proto, compiled when the
package is built: runtimes/proto) and the model repository extension's RepositoryIndex, served beside HTTP by the
same process.

It runs on grpc_wire.py's HTTP/2 (this server's own: grpcio's took about four times the CPU per call of the whole
HTTP path), on the HTTP server's event loop, and shares everything but the transport with HTTP: the Api (the models
and versions, their readiness), the schedulers (scheduler.py: runs at once, the queue and its 429 /
RESOURCE_EXHAUSTED, deadlines, batching; a quick run is answered at once, as HTTP's is), codec's checks and
messages (a client mistake reads the same on both), the limits (MLPACK_MAX_BODY_BYTES is the largest message;
every call holds its message's bytes on the server's budget while it is read and run), and the metrics
(`method="GRPC"`, the status as the gRPC code's name). Errors map to gRPC codes: a client mistake is
INVALID_ARGUMENT, an unknown model or version NOT_FOUND, a size limit, a full budget or a full queue
RESOURCE_EXHAUSTED, a call whose deadline passed while it waited for a run DEADLINE_EXCEEDED, inference while the
model is not ready UNAVAILABLE. A call the client cancels while it waits leaves the queue and is not run.

Tensors travel as `raw_input_contents` / `raw_output_contents` (the binary tensor layout, as tritonclient.grpc sends
them) or, for inputs, as typed `contents`; answers always use raw contents, which tritonclient reads.

On by default in server images (MLPACK_GRPC_PORT=8081 in their config); off (0) for `mlpack serve` unless
`--grpc-port` is given. Health checks stay on HTTP.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from mlpk.runtimes import api as api_module
from mlpk.runtimes import codec, proto, scheduler
from mlpk.runtimes.api import Api
from mlpk.runtimes.budget import Budget
from mlpk.runtimes.config import Settings
from mlpk.runtimes.errors import ClientError, NotFound, Overloaded, TimedOut, TooLarge
from mlpk.runtimes.grpc_wire import Abort, Context, GrpcServer, Limits, Method, Status
from mlpk.runtimes.metrics import Metrics
from mlpk.runtimes.scheduler import INLINE_BYTES, Call, Scheduler

MESSAGES = proto.methods()  # method -> (request class, response class)


def _answer(method: str, **fields: Any) -> Any:
    """The response message of `method`, with `fields`."""
    return MESSAGES[method][1](**fields)

# v2 datatype -> the field of InferTensorContents that carries it (FP16 has none: raw contents only)
CONTENTS = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
            "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
            "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
            "FP64": "fp64_contents", "BYTES": "bytes_contents"}


def status_of(err: ClientError) -> Status:
    if isinstance(err, NotFound):
        return Status.NOT_FOUND
    if isinstance(err, (TooLarge, Overloaded)):  # QueueFull too
        return Status.RESOURCE_EXHAUSTED
    if isinstance(err, TimedOut):
        return Status.DEADLINE_EXCEEDED
    return Status.INVALID_ARGUMENT


def timeout_of(request: Any) -> int | None:
    """The request's `timeout` parameter (microseconds, Triton's schedule-policy extension), as HTTP reads it."""
    if "timeout" not in request.parameters:
        return None
    parameter = request.parameters["timeout"]
    kind = parameter.WhichOneof("parameter_choice")
    value = getattr(parameter, kind) if kind else None
    return scheduler.timeout_parameter({"timeout": value})


def feeds_of(model: Any, request: Any, max_elements: int) -> dict[str, np.ndarray]:
    """The inputs of a ModelInferRequest, checked as codec checks HTTP's."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise ClientError(f"raw_input_contents has {len(raw)} entries for {len(request.inputs)} inputs; give one per "
                          "input, in the order of 'inputs'")
    feeds: dict[str, np.ndarray] = {}
    for index, tensor in enumerate(request.inputs):
        if tensor.name in feeds:
            raise ClientError(f"input '{tensor.name}' appears twice in the request")
        shape = list(tensor.shape)
        spec, count = codec.input_spec(model, tensor.name, tensor.datatype, shape, max_elements)
        if raw:
            if tensor.HasField("contents"):
                raise ClientError(f"input '{spec.name}' has both contents and raw_input_contents; give one")
            feeds[spec.name] = codec.from_binary(raw[index], spec, shape, count)
            continue
        field = CONTENTS.get(spec.datatype)
        if field is None:
            raise ClientError(f"input '{spec.name}' is {spec.datatype}, which has no typed contents field; send it "
                              "in raw_input_contents")
        values = list(getattr(tensor.contents, field))
        if spec.datatype == "BYTES":
            try:
                values = [value.decode("utf-8") for value in values]
            except UnicodeDecodeError as err:
                raise ClientError(f"input '{spec.name}' BYTES contents are not UTF-8 text: {err}") from err
        array = codec.from_json(values, spec, max_elements, finite=False, bools=False)  # typed: no true/false
        if array.size != count:
            raise ClientError(f"input '{spec.name}' has {array.size} values in contents.{field} but shape {shape} "
                              f"needs {count}; the model expects {spec.describe()}")
        feeds[spec.name] = array.reshape(shape)
    codec.check_complete(model, feeds)
    return feeds


class Servicer:
    """The service's methods over one Api and its schedulers."""

    def __init__(self, api: Api, schedulers: dict[tuple[str, str], Scheduler], limits: scheduler.Limits) -> None:
        self.api = api
        self.schedulers = schedulers
        self.limits = limits

    def ServerLive(self, request: Any, context: Context) -> Any:
        return _answer("ServerLive", live=True)

    def ServerReady(self, request: Any, context: Context) -> Any:
        return _answer("ServerReady", ready=self.api.repository.is_ready())

    def ModelReady(self, request: Any, context: Context) -> Any:
        """Not ready, not an error, for a model or version this server does not have (as Triton answers, and as
        tritonclient.http's is_model_ready reads HTTP's 404)."""
        try:
            found = self.api.find(request.name, request.version or None)
        except NotFound:
            return _answer("ModelReady", ready=False)
        return _answer("ModelReady", ready=found.readiness.is_set())

    def ServerMetadata(self, request: Any, context: Context) -> Any:
        return _answer("ServerMetadata", name=api_module.SERVER_NAME, version=api_module.SERVER_VERSION,
                                         extensions=api_module.EXTENSIONS)

    def ModelMetadata(self, request: Any, context: Context) -> Any:
        model = self.api.served(request.name, request.version or None)

        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [{"name": s.name, "datatype": s.datatype, "shape": s.v2_shape} for s in specs]

        versions = [served.version for served in self.api.repository.versions(model.name)]
        return _answer("ModelMetadata", name=model.name, versions=versions, platform="onnxruntime_onnx",
                                        inputs=tensors(model.inputs), outputs=tensors(model.outputs))

    def ModelInfer(self, request: Any, context: Context) -> Any:
        """The answer at once when the run is quick and nothing waits (the scheduler's inline path), else an
        awaitable of it."""
        arrived = time.monotonic()
        found = self.api.find(request.model_name, request.model_version or None)
        model = found.model
        if not found.readiness.is_set():
            _, answer = found.readiness.answer(model.name)
            raise _Unavailable(answer["error"])
        place = self.schedulers[(found.name, found.version)]
        timeout = timeout_of(request)  # refused alike on every path, though an inline run has no time to wait
        place.admit()
        context.at_end.append(place.leave)  # however the call ends
        if context.size > INLINE_BYTES:  # typed contents of this size take a while to check: not on the loop
            return self._infer(place, model, request, context, arrived, timeout, None)
        feeds = feeds_of(model, request, self.api.max_elements)
        names = self._outputs(model, request)
        if place.inline(feeds):
            return _response(model, request, names, place.run_inline(feeds, names))
        return self._infer(place, model, request, context, arrived, timeout, (feeds, names))

    def _outputs(self, model: Any, request: Any) -> list[str]:
        return [codec.output_spec(model, out.name).name for out in request.outputs] or \
            [spec.name for spec in model.outputs]

    async def _infer(self, place: Scheduler, model: Any, request: Any, context: Context, arrived: float,
                     timeout: int | None, checked: tuple[dict[str, np.ndarray], list[str]] | None) -> Any:
        if checked is None:
            feeds = await asyncio.get_running_loop().run_in_executor(
                place.executor, feeds_of, model, request, self.api.max_elements)
            names = self._outputs(model, request)
        else:
            feeds, names = checked
        call = Call(arrived, context.deadline)
        results = await place.run(feeds, names, call.deadline(self.limits, timeout))
        return _response(model, request, names, results)

    def RepositoryIndex(self, request: Any, context: Context) -> Any:
        return _answer("RepositoryIndex", models=self.api.repository.index(request.ready))


def _response(model: Any, request: Any, names: list[str], results: list[np.ndarray]) -> Any:
    response = _answer("ModelInfer", model_name=model.name, model_version=model.version, id=request.id)
    for name, array in zip(names, results, strict=True):
        spec = codec.output_spec(model, name)
        shape, raw = codec.raw_output(spec, array)
        response.outputs.add(name=name, datatype=spec.datatype, shape=shape)
        response.raw_output_contents.append(raw)
    return response


class _Unavailable(Exception):
    """Inference before the model version is ready: UNAVAILABLE with the readiness endpoint's reason."""


def _abort(err: ClientError | _Unavailable) -> Abort:
    """A client mistake as its gRPC status, with the message HTTP's 400 gives (and Retry-After as trailing
    metadata)."""
    if isinstance(err, _Unavailable):
        return Abort(Status.UNAVAILABLE, str(err))
    trailers = (("retry-after", str(err.retry_after_s)),) if isinstance(err, Overloaded) else ()
    return Abort(status_of(err), err.message, trailers)


def _translated(call: Callable[[Any, Context], Any]) -> Callable[[Any, Context], Any]:
    """`call` with its ClientErrors raised as Abort, also from the awaitable it may return."""

    async def later(answer: Awaitable[Any]) -> Any:
        try:
            return await answer
        except (ClientError, _Unavailable) as err:
            raise _abort(err) from None

    def handler(request: Any, context: Context) -> Any:
        try:
            answer = call(request, context)
        except (ClientError, _Unavailable) as err:
            raise _abort(err) from None
        return later(answer) if isinstance(answer, Awaitable) else answer

    return handler


def methods(servicer: Servicer) -> dict[str, Method]:
    """Every method of the service, RepositoryIndex included, by its path."""
    return {f"/{proto.SERVICE}/{name}": Method(request.FromString, response.SerializeToString,
                                              _translated(getattr(servicer, name)))
            for name, (request, response) in MESSAGES.items()}


async def start(api: Api, settings: Settings, budget: Budget, metrics: Metrics,
                schedulers: dict[tuple[str, str], Scheduler]) -> GrpcServer:
    """A started gRPC server on settings.host:settings.grpc_port, on the running event loop; ValueError when it
    cannot listen there."""
    server = GrpcServer(methods(Servicer(api, schedulers, scheduler.limits(settings))),
                        Limits(settings.max_body_bytes, settings.body_timeout_s), budget,
                        lambda path, status, seconds: metrics.observe_request(path, "GRPC", status, seconds))
    metrics.count_in_flight(lambda: server.in_flight)
    try:
        await server.listen(settings.host, settings.grpc_port)
    except OSError as err:
        raise ValueError(f"cannot listen for gRPC on {settings.host}:{settings.grpc_port}: {err.strerror or err} "
                         "(MLPACK_GRPC_PORT)") from None
    return server
