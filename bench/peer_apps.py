"""The apps a user of each peer framework writes to serve an ONNX model, as that framework's docs write one.

Each is the text of an `app.py` (and, for KServe and MLServer, the settings files beside it) that bench/peers.py
writes into a fresh folder and starts: FastAPI with a pydantic request model and a sync `def` endpoint; Flask's
`request.get_json()` -> `session.run` -> `jsonify`; a KServe `Model` subclass whose `predict` takes the v2
InferRequest, served by `ModelServer`; an MLServer custom runtime (`MLModel` with `load`/`predict`) named by
model-settings.json; a BentoML `@bentoml.service` with an `@bentoml.api`; a LitServe `LitAPI` with
decode_request/predict/encode_response. Every one creates its onnxruntime session on the CPU with one intra-op
and one inter-op thread, reading the model's path from $MODEL_PATH (MLServer: from its model settings' uri).
Settings templates use string.Template's $port, $spare and $model (see peers.Peer).
"""

from __future__ import annotations

import json
import textwrap


def _session(indent: str = "") -> str:
    """The session a user of any framework creates: CPU provider, one intra-op and one inter-op thread."""
    return textwrap.indent(textwrap.dedent('''
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
    '''), indent)


FASTAPI_APP = '''
import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI
from pydantic import BaseModel
''' + _session() + '''
session = ort.InferenceSession(os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name

app = FastAPI()


class PredictRequest(BaseModel):
    inputs: list[list[float]]


class PredictResponse(BaseModel):
    outputs: list[list[float]]


@app.post("/predict")
def predict(request: PredictRequest) -> PredictResponse:
    x = np.array(request.inputs, dtype=np.float32)
    y = session.run(None, {input_name: x})[0]
    return PredictResponse(outputs=y.tolist())


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}
'''

FLASK_APP = '''
import os

import numpy as np
import onnxruntime as ort
from flask import Flask, jsonify, request
''' + _session() + '''
session = ort.InferenceSession(os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name

app = Flask(__name__)


@app.route("/predict", methods=["POST"])
def predict():
    data = request.get_json()
    x = np.array(data["instances"], dtype=np.float32)
    y = session.run(None, {input_name: x})[0]
    return jsonify({"predictions": y.tolist()})


@app.route("/health")
def health():
    return "ok"
'''

KSERVE_APP = '''
import argparse
import os

import numpy as np
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer, model_server
from kserve.utils.utils import generate_uuid


class OnnxModel(Model):
    def __init__(self, name: str):
        super().__init__(name)
        self.load()

    def load(self) -> bool:
''' + _session("        ") + '''
        self.session = ort.InferenceSession(os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers=None) -> InferResponse:
        x = payload.inputs[0].as_numpy()
        y = self.session.run(None, {self.input_name: x})[0]
        output = InferOutput(name="y", shape=list(y.shape), datatype="FP32")
        output.set_data_from_numpy(y, binary_data=False)
        return InferResponse(model_name=self.name, infer_outputs=[output],
                             response_id=generate_uuid())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(parents=[model_server.parser])
    args, _ = parser.parse_known_args()
    ModelServer().start([OnnxModel(args.model_name)])
'''

# KServe logs a latency line per request and uvicorn's access line at INFO; its --log_config_file takes this
# logging.config dictionary (warnings and errors still reach the log).
KSERVE_LOG_CONFIG = json.dumps({
    "version": 1, "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}},
    "root": {"handlers": ["stderr"], "level": "WARNING"},
    "loggers": {name: {"level": "WARNING"} for name in ("kserve", "kserve.trace", "uvicorn", "uvicorn.access")},
}, indent=2)

MLSERVER_APP = '''
import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse
from mlserver.utils import get_model_uri


class OnnxModel(MLModel):
    async def load(self) -> bool:
        model_uri = await get_model_uri(self._settings)
''' + _session("        ") + '''
        self._session = ort.InferenceSession(model_uri, options, providers=["CPUExecutionProvider"])
        self._input_name = self._session.get_inputs()[0].name
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = self.decode(payload.inputs[0], default_codec=NumpyCodec)
        y = self._session.run(None, {self._input_name: x})[0]
        return InferenceResponse(model_name=self.name, outputs=[NumpyCodec.encode_output("y", y)])
'''

# MLServer reads server settings and model settings from the folder it is started on. parallel_workers 0 keeps
# inference in the one server process (its default, 1, adds a worker process fed over a queue); gRPC has no off
# switch, so it listens on a spare port; a null metrics_endpoint turns the metrics server off.
MLSERVER_SETTINGS = json.dumps({"host": "127.0.0.1", "http_port": "$port", "grpc_port": "$spare",
                                "metrics_endpoint": None, "parallel_workers": 0, "debug": False}, indent=2)
MLSERVER_MODEL_SETTINGS = json.dumps({"name": "mlp", "implementation": "app.OnnxModel",
                                      "parameters": {"uri": "$model"}}, indent=2)

BENTOML_APP = '''
import os
from typing import Annotated

import bentoml
import numpy as np
import onnxruntime as ort
from bentoml.validators import DType


@bentoml.service(workers=1, logging={"access": {"enabled": False}})
class MLP:
    def __init__(self) -> None:
''' + _session("        ") + '''
        self.session = ort.InferenceSession(os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    @bentoml.api
    def predict(self, inputs: Annotated[np.ndarray, DType("float32")]) -> np.ndarray:
        return self.session.run(None, {self.input_name: inputs})[0]
'''

LITSERVE_APP = '''
import os

import litserve as ls
import numpy as np
import onnxruntime as ort


class OnnxAPI(ls.LitAPI):
    def setup(self, device):
''' + _session("        ") + '''
        self.session = ort.InferenceSession(os.environ["MODEL_PATH"], options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name

    def decode_request(self, request):
        return np.asarray(request["input"], dtype=np.float32)

    def predict(self, x):
        return self.session.run(None, {self.input_name: x})[0]

    def encode_response(self, output):
        return {"output": output.tolist()}


if __name__ == "__main__":
    server = ls.LitServer(OnnxAPI(), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=int(os.environ["PORT"]), num_api_servers=1, log_level="warning",
               generate_client_file=False)
'''
