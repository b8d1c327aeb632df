"""The Open Inference Protocol over gRPC: KServe v2's GRPCInferenceService (grpc_predict_v2.proto, compiled when the
package is built: runtimes/proto) and the model repository extension's RepositoryIndex, served beside HTTP by the
same process.

It runs on grpc.aio, on the HTTP server's event loop, and shares everything but the transport with HTTP: the Api (the
models and versions, their readiness), the schedulers (scheduler.py: runs at once, the queue and its 429 /
RESOURCE_EXHAUSTED, deadlines, batching), codec's checks and messages (a client mistake reads the same on both),
the limits (MLPACK_MAX_BODY_BYTES is the largest message; every call holds its message's bytes on the server's
budget), and the metrics (`method="GRPC"`, the status as the gRPC
code's name). Errors map to gRPC codes: a client mistake is INVALID_ARGUMENT, an unknown model or version
NOT_FOUND, a size limit, a full budget or a full queue RESOURCE_EXHAUSTED, a call whose deadline passed while it
waited for a run DEADLINE_EXCEEDED, inference while the model is not ready UNAVAILABLE. A call the client cancels
while it waits leaves the queue and is not run.

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

import grpc
import numpy as np
from grpc import aio

from mlpk.runtimes import api as api_module
from mlpk.runtimes import codec, logs, proto, scheduler
from mlpk.runtimes.api import Api
from mlpk.runtimes.budget import Budget
from mlpk.runtimes.config import Settings
from mlpk.runtimes.errors import ClientError, NotFound, Overloaded, TimedOut, TooLarge
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


def status_of(err: ClientError) -> grpc.StatusCode:
    if isinstance(err, NotFound):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(err, (TooLarge, Overloaded)):  # QueueFull too
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(err, TimedOut):
        return grpc.StatusCode.DEADLINE_EXCEEDED
    return grpc.StatusCode.INVALID_ARGUMENT


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
        array = codec.from_json(values, spec, max_elements)
        if array.size != count:
            raise ClientError(f"input '{spec.name}' has {array.size} values in contents.{field} but shape {shape} "
                              f"needs {count}; the model expects {spec.describe()}")
        feeds[spec.name] = array.reshape(shape)
    codec.check_complete(model, feeds)
    return feeds


class Servicer:
    """The service's methods over one Api and its schedulers."""

    def __init__(self, api: Api, budget: Budget, schedulers: dict[tuple[str, str], Scheduler],
                 limits: scheduler.Limits) -> None:
        self.api = api
        self.budget = budget
        self.schedulers = schedulers
        self.limits = limits

    def ServerLive(self, request: Any, context: Any) -> Any:
        return _answer("ServerLive", live=True)

    def ServerReady(self, request: Any, context: Any) -> Any:
        return _answer("ServerReady", ready=self.api.repository.is_ready())

    def ModelReady(self, request: Any, context: Any) -> Any:
        """Not ready, not an error, for a model or version this server does not have (as Triton answers, and as
        tritonclient.http's is_model_ready reads HTTP's 404)."""
        try:
            found = self.api.find(request.name, request.version or None)
        except NotFound:
            return _answer("ModelReady", ready=False)
        return _answer("ModelReady", ready=found.readiness.is_set())

    def ServerMetadata(self, request: Any, context: Any) -> Any:
        return _answer("ServerMetadata", name=api_module.SERVER_NAME, version=api_module.SERVER_VERSION,
                                         extensions=api_module.EXTENSIONS)

    def ModelMetadata(self, request: Any, context: Any) -> Any:
        model = self.api.served(request.name, request.version or None)

        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [{"name": s.name, "datatype": s.datatype, "shape": s.v2_shape} for s in specs]

        versions = [served.version for served in self.api.repository.versions(model.name)]
        return _answer("ModelMetadata", name=model.name, versions=versions, platform="onnxruntime_onnx",
                                        inputs=tensors(model.inputs), outputs=tensors(model.outputs))

    async def ModelInfer(self, request: Any, context: Any) -> Any:
        arrived = time.monotonic()
        found = self.api.find(request.model_name, request.model_version or None)
        model = found.model
        if not found.readiness.is_set():
            _, answer = found.readiness.answer(model.name)
            raise _Unavailable(answer["error"])
        place = self.schedulers[(found.name, found.version)]
        place.admit()
        lease = self.budget.lease()
        try:
            size = request.ByteSize()
            lease.hold(size, f"a gRPC request of {size} bytes")
            if size > INLINE_BYTES:  # typed contents of this size take a while to check: not on the loop
                feeds = await asyncio.get_running_loop().run_in_executor(
                    place.executor, feeds_of, model, request, self.api.max_elements)
            else:
                feeds = feeds_of(model, request, self.api.max_elements)
            names = [codec.output_spec(model, out.name).name for out in request.outputs] or \
                [spec.name for spec in model.outputs]
            if place.inline(feeds):
                results = place.run_inline(feeds, names)
            else:
                remaining = context.time_remaining()
                call = Call(arrived, None if remaining is None else time.monotonic() + remaining)
                results = await place.run(feeds, names, call.deadline(self.limits, timeout_of(request)))
            response = _answer("ModelInfer", model_name=model.name, model_version=model.version, id=request.id)
            for name, array in zip(names, results, strict=True):
                spec = codec.output_spec(model, name)
                shape, raw = codec.raw_output(spec, array)
                response.outputs.add(name=name, datatype=spec.datatype, shape=shape)
                response.raw_output_contents.append(raw)
            return response
        finally:
            lease.release()
            place.leave()

    def RepositoryIndex(self, request: Any, context: Any) -> Any:
        return _answer("RepositoryIndex", models=self.api.repository.index(request.ready))


class _Unavailable(Exception):
    """Inference before the model version is ready: UNAVAILABLE with the readiness endpoint's reason."""


def _observed(method: str, call: Callable[[Any, Any], Any], metrics: Metrics,
              in_flight: list[int]) -> Callable[[Any, Any], Awaitable[Any]]:
    """`call` with its ClientErrors answered as gRPC codes (the message as HTTP's 400 says it), and counted (in
    `in_flight[0]` while it runs)."""
    endpoint = f"/{proto.SERVICE}/{method}"

    async def handler(request: Any, context: aio.ServicerContext) -> Any:
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        in_flight[0] += 1
        try:
            answer = call(request, context)
            return await answer if asyncio.iscoroutine(answer) else answer
        except ClientError as err:
            code = status_of(err)
            if isinstance(err, Overloaded):  # HTTP's Retry-After, as trailing metadata
                context.set_trailing_metadata((("retry-after", str(err.retry_after_s)),))
            await context.abort(code, err.message)
        except _Unavailable as err:
            code = grpc.StatusCode.UNAVAILABLE
            await context.abort(code, str(err))
        except asyncio.CancelledError:
            code = grpc.StatusCode.CANCELLED  # the client went away
            raise
        except Exception as err:
            if context.code() is None:  # a bug, not an abort: logged as HTTP's 500s are
                code = grpc.StatusCode.UNKNOWN
                logs.get().error("internal error", exc_info=err, extra={"fields": {"path": endpoint}})
            raise
        finally:
            in_flight[0] -= 1
            metrics.observe_request(endpoint, "GRPC", code.name, time.perf_counter() - started)

    return handler


def handlers(servicer: Servicer, metrics: Metrics) -> grpc.GenericRpcHandler:
    """Every method of the service, RepositoryIndex included, as one handler."""
    in_flight = [0]
    metrics.count_in_flight(lambda: in_flight[0])
    methods = {name: grpc.unary_unary_rpc_method_handler(_observed(name, getattr(servicer, name), metrics, in_flight),
                                                         request_deserializer=request.FromString,
                                                         response_serializer=response.SerializeToString)
               for name, (request, response) in MESSAGES.items()}
    return grpc.method_handlers_generic_handler(proto.SERVICE, methods)


async def start(api: Api, settings: Settings, budget: Budget, metrics: Metrics,
                schedulers: dict[tuple[str, str], Scheduler]) -> aio.Server:
    """A started gRPC server on settings.host:settings.grpc_port, on the running event loop; ValueError when it
    cannot listen there."""
    limits = scheduler.limits(settings)
    # grpc reads a call's message before the handler runs, so the calls it holds at once bound the memory of
    # messages: as many as the schedulers admit, and some more to answer RESOURCE_EXHAUSTED with their reason.
    places = sum(limits.concurrency + limits.queue for _ in schedulers) + 16
    server = aio.server(maximum_concurrent_rpcs=places,
                        options=[("grpc.max_receive_message_length", settings.max_body_bytes),
                                 ("grpc.max_send_message_length", -1), ("grpc.so_reuseport", 0)])
    server.add_generic_rpc_handlers((handlers(Servicer(api, budget, schedulers, limits), metrics),))
    address = f"[{settings.host}]:{settings.grpc_port}" if ":" in settings.host else \
        f"{settings.host}:{settings.grpc_port}"
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as err:
        raise ValueError(f"cannot listen for gRPC on {address}: {err} (MLPACK_GRPC_PORT)") from None
    if not bound:
        raise ValueError(f"cannot listen for gRPC on {address} (MLPACK_GRPC_PORT): the port is taken or the address "
                         "is not this host's")
    await server.start()
    return server
