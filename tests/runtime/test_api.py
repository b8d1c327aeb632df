"""The transport-independent API in process (what both the HTTP server and the Lambda handler call)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from mlpk.runtimes import api, config
from mlpk.runtimes import model as model_module
from tests.runtime.models import IR_VERSION, OPSET


def gather_model(directory: Path) -> Path:
    table = numpy_helper.from_array(np.arange(12, dtype=np.float32).reshape(4, 3), "table")
    graph = helper.make_graph([helper.make_node("Gather", ["table", "index"], ["rows"])], "lookup",
                              [helper.make_tensor_value_info("index", TensorProto.INT64, ["n"])],
                              [helper.make_tensor_value_info("rows", TensorProto.FLOAT, ["n", 3])], [table])
    directory.mkdir(parents=True)
    onnx.save(helper.make_model(graph, opset_imports=OPSET, ir_version=IR_VERSION), directory / "model.onnx")
    return directory


def test_a_kernel_failing_on_the_values_is_a_400(tmp_path: Path) -> None:
    served = api.Api(model_module.load(config.Settings(model_path=gather_model(tmp_path / "g"))), 1000)

    def infer(indices: list[int]) -> api.Reply:
        body = {"inputs": [{"name": "index", "datatype": "INT64", "shape": [len(indices)], "data": indices}]}
        route, params = api.match("POST", "/v2/models/model/infer")
        return served.call(route, params, json.dumps(body).encode(), {})

    good = infer([3, 0])
    assert good.status == 200
    assert json.loads(good.body)["outputs"][0]["data"] == [9.0, 10.0, 11.0, 0.0, 1.0, 2.0]
    bad = infer([99])
    assert bad.status == 400
    message = json.loads(bad.body)["error"]
    assert "Gather" in message and "idx=99" in message and "'index' INT64 [-1]" in message


def test_every_route_has_its_handler() -> None:
    for route in api.ROUTES:
        assert callable(getattr(api.Api, route.handler, None)), route


def test_route_table_matches_paths_with_parameters() -> None:
    route, params = api.match("POST", "/v1/models/my-model:predict")
    assert (route.handler, params) == ("predict", {"model": "my-model"})
    route, params = api.match("GET", "/v2/models/m/versions/1/ready")
    assert (route.handler, params) == ("model_ready", {"model": "m", "version": "1"})
