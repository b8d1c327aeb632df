"""The AWS Lambda handler: `mlpk.runtimes.lambda_handler.handler`, run by awslambdaric in mlpack's Lambda images.

The model session is created when Lambda imports this module (the init phase, outside the handler, so every warm
invocation reuses it and init time is billed once). The handler accepts:
- API Gateway REST API (payload v1) and HTTP API (payload v2) proxy events, and Function URL events (v2 shape):
  the same routes as the HTTP server (api.ROUTES), optionally under a stage prefix; `POST /` runs inference with a
  v2 or TF Serving body. Bodies may be base64 (`isBase64Encoded`); binary answers are returned base64.
- Direct invocation (`aws lambda invoke`, Step Functions): the event is the v2 request object (JSON tensors) or a
  TF Serving `instances` / `inputs` object; the answer is the response object itself. With a model repository
  (several models), `"model_name"` (and optionally `"model_version"`, as gRPC's ModelInferRequest names them) in
  the event picks the model; HTTP events pick it by their path, as the server does.
Client errors answer 4xx: `statusCode` and `{"error": ...}` for HTTP events, `{"statusCode": 4xx, "error": ...}`
for direct calls, never an unhandled function error. Only /tmp is written (the TensorRT cache default moves there).
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlpk.runtimes import api as api_module
from mlpk.runtimes import bodies, config, logs, warmup
from mlpk.runtimes import model as model_module
from mlpk.runtimes.api import Api
from mlpk.runtimes.errors import ClientError, TooLarge
from mlpk.runtimes.providers import CPU

_STARTED = time.perf_counter()
# Lambda functions have no GPU and a read-only file system except /tmp.
LAMBDA_DEFAULTS = config.Settings(providers=(CPU,), trt_cache=Path("/tmp/mlpack/trt"), warmup_runs=1)
SETTINGS = config.from_env(base=LAMBDA_DEFAULTS)
logs.setup(SETTINGS.log_level)
MODELS = model_module.load_all(SETTINGS)
API = Api(MODELS, SETTINGS.max_tensor_elements)
for _served in MODELS.served:  # CPU: a failed warm-up is logged once, then served
    warmup.settle(_served.model, SETTINGS.warmup_runs, _served.readiness)
INIT_SECONDS = time.perf_counter() - _STARTED
logs.info("lambda init done", models=MODELS.names(), init_s=round(INIT_SECONDS, 3))


def _default_model(how: str) -> str:
    """The model a request that names none goes to: the only one; a ClientError when the function serves several."""
    only = MODELS.only()
    if only is None:
        raise ClientError(f"this function serves several models ({', '.join(MODELS.names())}); {how}")
    return only.name


def _is_v2_request(event: Mapping[str, Any]) -> bool:
    inputs = event.get("inputs")
    return isinstance(inputs, list) and all(isinstance(item, dict) and "datatype" in item for item in inputs)


def _body(event: Mapping[str, Any]) -> bytes:
    body = event.get("body")
    if body is None:
        return b""
    if not isinstance(body, str):
        raise ClientError(f"the event's 'body' must be a string, got {type(body).__name__}")
    if event.get("isBase64Encoded"):
        try:
            raw = base64.b64decode(body, validate=True)
        except binascii.Error as err:
            raise ClientError(f"the event says isBase64Encoded but its body is not base64: {err}") from err
    else:
        raw = body.encode("utf-8")
    if len(raw) > SETTINGS.max_body_bytes:
        raise TooLarge(f"request body of {len(raw)} bytes is over the limit of {SETTINGS.max_body_bytes} bytes "
                       f"(MLPACK_MAX_BODY_BYTES); this function serves {MODELS.describe()}")
    return raw


def _route(method: str, path: str, body: bytes) -> tuple[api_module.Route, dict[str, str]]:
    """The route for an HTTP event; a stage prefix (`/prod/v2/...`) is tolerated, and `POST /` infers."""
    if method == "POST" and path.strip("/") == "":
        try:
            is_v2 = _is_v2_request(json.loads(body or b"{}"))
        except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
            is_v2 = True  # let the v2 parser report the malformed body with the model's signature
        handler = "infer" if is_v2 else "predict"
        template = "/v2/models/{model}/infer" if is_v2 else "/v1/models/{model}:predict"
        route = next(r for r in api_module.ROUTES if r.handler == handler and r.template == template)
        return route, {"model": _default_model("POST to /v2/models/NAME/infer or /v1/models/NAME:predict")}
    try:
        return api_module.match(method, path)
    except ClientError:
        parts = path.split("/", 2)
        if len(parts) == 3 and parts[2]:
            return api_module.match(method, "/" + parts[2])
        raise


def _http(method: str, path: str, event: Mapping[str, Any]) -> dict[str, Any]:
    headers = {str(k).lower(): str(v) for k, v in (event.get("headers") or {}).items()}
    try:
        body = bodies.decode(_body(event), headers.get("content-encoding"), SETTINGS.max_body_bytes)
        route, params = _route(method.upper(), path, body)
        reply = API.call(route, params, body, headers)
    except ClientError as err:
        reply = api_module.error_reply(err)
    binary = not reply.content_type.startswith("application/json")
    return {
        "statusCode": reply.status,
        "headers": {"Content-Type": reply.content_type, **dict(reply.headers)},
        "body": base64.b64encode(reply.body).decode() if binary else reply.body.decode("utf-8"),
        "isBase64Encoded": binary,
    }


def _direct(event: Mapping[str, Any]) -> dict[str, Any]:
    try:
        name, version = event.get("model_name"), event.get("model_version")
        if not isinstance(name, (str, type(None))) or not isinstance(version, (str, type(None))):
            raise ClientError(f"the event's model_name {name!r} and model_version {version!r} must be strings")
        name = name or _default_model("name one with the event's \"model_name\" (and \"model_version\")")
        event = {key: value for key, value in event.items() if key not in ("model_name", "model_version")}
        if _is_v2_request(event):
            parameters = event.get("parameters")
            wants_binary = (isinstance(parameters, dict) and parameters.get("binary_data_output")) or any(
                isinstance(o, dict) and isinstance(o.get("parameters"), dict) and o["parameters"].get("binary_data")
                for o in event.get("outputs") or [])
            if wants_binary:
                raise ClientError("binary outputs need an HTTP event (API Gateway or a Function URL); a direct "
                                  "invocation answers JSON tensors only")
            reply = API.run_now(API.infer(model=name, version=version, body=json.dumps(event).encode(), headers={}))
        elif "instances" in event or "inputs" in event:
            reply = API.run_now(API.predict(model=name, version=version, body=json.dumps(event).encode()))
        else:
            raise ClientError(f"unrecognised event with keys {sorted(event)[:8]}: expected an API Gateway (v1 or "
                              "v2) or Function URL event, a v2 inference request ({'inputs': [...]}) or a TF "
                              f"Serving request ({{'instances': [...]}}); this function serves {MODELS.describe()}")
    except ClientError as err:
        return {"statusCode": err.status, "error": err.message}
    answer: dict[str, Any] = json.loads(reply.body)
    return answer


def handler(event: Any, context: Any = None) -> dict[str, Any]:
    """The Lambda entrypoint (see the module docstring for the events it accepts)."""
    del context
    if not isinstance(event, dict):
        return {"statusCode": 400, "error": f"the event must be a JSON object, got {type(event).__name__}; this "
                                            f"function serves {MODELS.describe()}"}
    context_http = (event.get("requestContext") or {}).get("http") if isinstance(event.get("requestContext"),
                                                                                 dict) else None
    if event.get("version") == "2.0" or isinstance(context_http, dict):  # HTTP API v2 and Function URLs
        http = context_http if isinstance(context_http, dict) else {}
        return _http(str(http.get("method", "GET")), str(event.get("rawPath") or http.get("path") or "/"), event)
    if "httpMethod" in event:  # REST API (payload v1)
        return _http(str(event["httpMethod"]), str(event.get("path") or "/"), event)
    return _direct(event)
