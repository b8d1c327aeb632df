"""The HTTP API, independent of transport: one route table and one handler per endpoint, used by both the ASGI
server (server.py) and the Lambda handler (lambda_handler.py), so both answer every request identically.

Endpoints: Open Inference Protocol v2 (KServe v2: server metadata, liveness, readiness, model metadata and
readiness, inference), TF Serving REST `:predict` and model status, and the OpenAPI document of all of them.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np

from mlpk.runtimes import codec, tfserving
from mlpk.runtimes.budget import Hold, Lease
from mlpk.runtimes.errors import ClientError, MethodNotAllowed, NotFound, Overloaded
from mlpk.runtimes.model import Model
from mlpk.runtimes.repository import Repository, Served

SERVER_NAME = "mlpack"
SERVER_VERSION = "1"
EXTENSIONS = ["binary_tensor_data", "model_configuration", "model_repository"]
HEADER_LENGTH = "inference-header-content-length"
JSON = "application/json"


@dataclass(frozen=True, slots=True)
class Reply:
    """An HTTP answer: status, body, content type and extra headers."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: tuple[tuple[str, str], ...] = ()


def json_reply(data: Any, status: int = 200) -> Reply:
    return Reply(status, codec.dumps(data))


def error_reply(err: ClientError) -> Reply:
    reply = json_reply({"error": err.message}, err.status)
    if isinstance(err, MethodNotAllowed):
        return Reply(reply.status, reply.body, reply.content_type, (("Allow", ", ".join(err.allowed)),))
    if isinstance(err, Overloaded):  # QueueFull (429) too
        return Reply(reply.status, reply.body, reply.content_type, (("Retry-After", str(err.retry_after_s)),))
    return reply


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: method, path template (`{name}` matches one path segment without `:`: no model name has one,
    and TF Serving's `:predict` follows it), and the Api method it calls."""

    method: str
    template: str
    handler: str
    pattern: re.Pattern[str] = field(init=False, compare=False)

    def __post_init__(self) -> None:
        regex = re.sub(r"\{(\w+)\}", r"(?P<\1>[^/:]+?)", self.template)
        object.__setattr__(self, "pattern", re.compile(regex))


ROUTES: tuple[Route, ...] = (
    Route("GET", "/v2", "server_metadata"),
    Route("GET", "/v2/health/live", "live"),
    Route("GET", "/v2/health/ready", "ready"),
    Route("GET", "/v2/models/{model}", "model_metadata"),
    Route("GET", "/v2/models/{model}/versions/{version}", "model_metadata"),
    Route("GET", "/v2/models/{model}/ready", "model_ready"),
    Route("GET", "/v2/models/{model}/config", "model_config"),
    Route("GET", "/v2/models/{model}/versions/{version}/config", "model_config"),
    Route("POST", "/v2/repository/index", "repository_index"),
    Route("GET", "/v2/models/{model}/versions/{version}/ready", "model_ready"),
    Route("POST", "/v2/models/{model}/infer", "infer"),
    Route("POST", "/v2/models/{model}/versions/{version}/infer", "infer"),
    Route("GET", "/v1/models/{model}", "tf_status"),
    Route("GET", "/v1/models/{model}/versions/{version}", "tf_status"),
    Route("POST", "/v1/models/{model}:predict", "predict"),
    Route("POST", "/v1/models/{model}/versions/{version}:predict", "predict"),
    Route("GET", "/openapi.json", "openapi"),
)


@functools.lru_cache(maxsize=1024)
def match(method: str, path: str) -> tuple[Route, dict[str, str]]:
    """The route for a request, with its path parameters (read-only: the same dict answers the same path again;
    a client sends the same few); NotFound (404) when none matches (refusals are not kept)."""
    allowed = []
    for route in ROUTES:
        found = route.pattern.fullmatch(path)
        if found:
            if route.method == method:
                return route, found.groupdict()
            allowed.append(route.method)
    if allowed:
        methods = tuple(dict.fromkeys(allowed))
        raise MethodNotAllowed(f"method {method} is not allowed on {path}; use {', '.join(methods)}", methods)
    raise NotFound(f"no endpoint {method} {path}; see GET /openapi.json")


@dataclass(frozen=True, slots=True)
class Inference:
    """An inference request, parsed and checked: the model version to run, its feeds and outputs, the request's own
    `timeout` parameter (microseconds; scheduler.py), and how to turn the outputs into the answer. The transport
    decides when and where it runs (the server: scheduler.py; the Lambda handler: at once)."""

    served: Served
    feeds: dict[str, np.ndarray]
    outputs: tuple[str, ...]
    timeout_us: int | None
    render: Callable[[list[np.ndarray]], Reply]

    def answer(self, results: list[np.ndarray]) -> Reply:
        """The reply for `results`; a client error (TF Serving rows of outputs without a shared batch axis) as its
        4xx reply."""
        try:
            return self.render(results)
        except ClientError as err:
            return error_reply(err)


class Api:
    """The endpoints over the served models (repository.py): one model, or a repository of models and versions."""

    def __init__(self, models: Model | Repository, max_elements: int) -> None:
        self.repository = models if isinstance(models, Repository) else Repository([Served(models)])
        self.max_elements = max_elements

    def prepare(self, route: Route, params: Mapping[str, str], body: bytes, headers: Mapping[str, str],
                lease: Lease | None = None) -> Reply | Inference:
        """Run `route`'s handler: the reply, or for an inference route the parsed Inference to run; client errors
        become their 4xx reply. `lease` holds the memory its JSON takes to parse on the server's budget (the Lambda
        handler has none: its function's memory is its bound)."""
        try:
            return getattr(self, route.handler)(body=body, headers=headers, hold=lease.hold if lease else None,
                                                **params)
        except ClientError as err:
            return error_reply(err)

    def call(self, route: Route, params: Mapping[str, str], body: bytes, headers: Mapping[str, str],
             lease: Lease | None = None) -> Reply:
        """The reply to a request, an inference run at once (the Lambda handler's way: one event at a time)."""
        prepared = self.prepare(route, params, body, headers, lease)
        if isinstance(prepared, Reply):
            return prepared
        try:
            return self.run_now(prepared)
        except ClientError as err:
            return error_reply(err)

    @staticmethod
    def run_now(inference: Inference) -> Reply:
        """The reply of `inference` run at once; a ClientError of the run or of the answer propagates."""
        return inference.render(inference.served.model.run(inference.feeds, inference.outputs))

    def find(self, model: str, version: str | None = None) -> Served:
        """The model version a request names, with its readiness; NotFound otherwise."""
        return self.repository.find(model, version)

    def served(self, model: str, version: str | None = None) -> Model:
        """The model a request names (its newest ready version when it names none); NotFound otherwise."""
        return self.find(model, version).model

    def signature(self, params: Mapping[str, str]) -> str:
        """What the model a request's path names expects, for messages about its body; every model's when the path
        names none that is served."""
        try:
            return self.served(params["model"], params.get("version")).signature()
        except (KeyError, NotFound):
            return self.repository.describe()

    def server_metadata(self, **_: Any) -> Reply:
        return json_reply({"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})

    def live(self, **_: Any) -> Reply:
        return json_reply({"live": True})

    def ready(self, **_: Any) -> Reply:
        status, body = self.repository.answer()
        return json_reply(body, status)

    def model_ready(self, model: str, version: str | None = None, **_: Any) -> Reply:
        found = self.find(model, version)
        status, body = found.readiness.answer(found.name)
        return json_reply(body, status)

    def model_metadata(self, model: str, version: str | None = None, **_: Any) -> Reply:
        served = self.served(model, version)

        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [{"name": s.name, "datatype": s.datatype, "shape": s.v2_shape,
                     **({"parameters": {"content": s.content, "onnx_type": s.onnx_type}} if s.is_json else {})}
                    for s in specs]

        versions = [s.version for s in self.repository.versions(served.name)]
        return json_reply({"name": served.name, "versions": versions, "platform": "onnxruntime_onnx",
                           "inputs": tensors(served.inputs), "outputs": tensors(served.outputs)})

    def model_config(self, model: str, version: str | None = None, **_: Any) -> Reply:
        """Triton's model configuration extension (tritonclient's get_model_config, perf_analyzer): the model as
        an onnxruntime model without Triton-side batching (max_batch_size 0: the batch axis is in the dims)."""
        served = self.served(model, version)

        def tensors(specs: Any) -> list[dict[str, Any]]:
            return [{"name": s.name, "data_type": "TYPE_STRING" if s.datatype == "BYTES" else f"TYPE_{s.datatype}",
                     "dims": s.v2_shape} for s in specs]

        return json_reply({"name": served.name, "platform": "onnxruntime_onnx", "backend": "onnxruntime",
                           "max_batch_size": 0, "input": tensors(served.inputs), "output": tensors(served.outputs)})

    def repository_index(self, body: bytes = b"", **_: Any) -> Reply:
        """Triton's model repository extension, read-only: every model version with its state, and the ones that
        failed to load with their reason. `{"ready": true}` lists the ready ones only."""
        try:
            request = json.loads(body) if body.strip() else {}
        except (ValueError, RecursionError) as err:  # JSONDecodeError, bad UTF-8, deep nesting, a 5000-digit integer
            raise ClientError(f"the repository index request is not JSON: {err}; send {{}} or {{\"ready\": true}}") \
                from None
        ready = request.get("ready", False) if isinstance(request, dict) else None
        if not isinstance(ready, bool):
            raise ClientError(f"the repository index request {request!r} is not an object with an optional boolean "
                              "'ready'; send {} or {\"ready\": true}")
        return json_reply(self.repository.index(ready))

    def infer(self, model: str, body: bytes, headers: Mapping[str, str], version: str | None = None,
              hold: Hold | None = None, **_: Any) -> Inference:
        found = self.find(model, version)
        raw_length = headers.get(HEADER_LENGTH)
        try:
            header_length = None if raw_length is None else int(raw_length)
        except ValueError:
            raise ClientError(f"Inference-Header-Content-Length {raw_length!r} is not an integer") from None
        request = codec.parse_request(found.model, body, header_length, self.max_elements, hold)

        def render(results: list[np.ndarray]) -> Reply:
            payload, json_length = codec.encode_response(found.model, request, results)
            if json_length is None:
                return Reply(200, payload)
            return Reply(200, payload, "application/octet-stream",
                         (("Inference-Header-Content-Length", str(json_length)),))

        return Inference(found, request.feeds, request.outputs, request.timeout_us, render)

    def predict(self, model: str, body: bytes, version: str | None = None,
                hold: Hold | None = None, **_: Any) -> Inference:
        found = self.find(model, version)
        feeds, form = tfserving.parse(found.model, body, self.max_elements, hold)
        return Inference(found, feeds, tuple(spec.name for spec in found.model.outputs), None,
                         lambda results: Reply(200, tfserving.render(found.model, results, form)))

    def tf_status(self, model: str, version: str | None = None, **_: Any) -> Reply:
        """TF Serving's model status: every loaded version of the model, or the one named."""
        entries = []
        named = self.served(model, version)
        for found in self.repository.versions(named.name) if version is None else [self.find(model, version)]:
            error = found.readiness.error
            status = {"error_code": "UNAVAILABLE", "error_message": error} if error else {"error_code": "OK",
                                                                                           "error_message": ""}
            entries.append({"version": found.version, "state": "AVAILABLE" if found.readiness.is_set() else "LOADING",
                            "status": status})
        return json_reply({"model_version_status": entries})

    def openapi(self, **_: Any) -> Reply:
        return Reply(200, openapi_document())


def openapi_document() -> bytes:
    """The OpenAPI document kept beside this module (runtimes/openapi.json)."""
    return resources.files("mlpk.runtimes").joinpath("openapi.json").read_bytes()
