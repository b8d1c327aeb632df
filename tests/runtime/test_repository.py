"""A model repository (runtimes/repository.py): several models and versions served side by side by the real server
process, `mlpack serve DIR` and the Lambda handler; version policies; a version or model that fails to load leaves
the others serving, visible in the index and the log; real clients (httpx, tritonclient HTTP and gRPC)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import tritonclient.grpc as tgrpc
import tritonclient.http as thttp

from mlpk.runtimes import repository
from mlpk.runtimes.errors import ModelLoadError
from tests.conftest import free_port
from tests.runtime import models
from tests.runtime.conftest import start_server, stop_server, wait_ready

X = [[1.0, 2.0, 3.0]]


def layout(root: Path) -> Path:
    """A: versions 1 and 2 (y = x * version) and a corrupt 3; B: the every-dtype model; C: versions 1 and 2 under
    policy latest 1; D: only a corrupt version; E: a config.json that is not JSON; 'bad name!': not a model name;
    notes/ beside A's versions is no version."""
    models.scaled(root / "A" / "1", 1.0)
    models.scaled(root / "A" / "2", 2.0)
    (root / "A" / "3").mkdir()
    (root / "A" / "3" / "model.onnx").write_bytes(b"\x08corrupt")
    (root / "A" / "notes").mkdir()
    models.every_dtype(root / "B" / "1")
    models.scaled(root / "C" / "1", 10.0)
    models.scaled(root / "C" / "2", 20.0)
    (root / "C" / "config.json").write_text(json.dumps({"version_policy": {"latest": {"num_versions": 1}}}))
    (root / "D" / "1").mkdir(parents=True)
    (root / "D" / "1" / "model.onnx").write_bytes(b"not onnx")
    models.scaled(root / "E" / "1", 1.0)
    (root / "E" / "config.json").write_text("{version_policy")
    models.scaled(root / "bad name!" / "1", 1.0)
    return root


def infer(url: str, path: str) -> httpx.Response:
    return httpx.post(url + path, json={"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 3], "data": X}]})


@pytest.fixture(scope="module")
def repo_server(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - a generator fixture
    root = layout(tmp_path_factory.mktemp("repo"))
    grpc_port = free_port()
    served = start_server(root, tmp_path_factory.mktemp("log") / "server.log", MLPACK_GRPC_PORT=str(grpc_port))
    yield served, f"127.0.0.1:{grpc_port}"
    stop_server(served)


def test_every_version_serves_and_the_name_alone_gets_the_newest(repo_server) -> None:  # noqa: ANN001
    served, _ = repo_server
    assert httpx.get(served.url + "/v2/health/ready").status_code == 200  # the failures do not block readiness
    assert infer(served.url, "/v2/models/A/infer").json()["outputs"][0]["data"] == [2.0, 4.0, 6.0]
    assert infer(served.url, "/v2/models/A/versions/1/infer").json()["outputs"][0]["data"] == [1.0, 2.0, 3.0]
    assert infer(served.url, "/v2/models/A/versions/2/infer").json()["model_version"] == "2"
    assert httpx.get(served.url + "/v2/models/A").json()["versions"] == ["2", "1"]
    assert httpx.get(served.url + "/v2/models/A/versions/1/ready").status_code == 200
    predicted = httpx.post(served.url + "/v1/models/A/versions/1:predict", json={"instances": X}).json()
    assert predicted == {"predictions": [[1.0, 2.0, 3.0]]}
    status = httpx.get(served.url + "/v1/models/A").json()["model_version_status"]
    assert [entry["version"] for entry in status] == ["2", "1"]
    assert infer(served.url, "/v2/models/C/infer").json()["outputs"][0]["data"] == [20.0, 40.0, 60.0]
    metrics = httpx.get(served.url + "/metrics").text
    assert 'mlpack_model_ready{model="A",version="1"} 1.0' in metrics
    assert 'mlpack_model_ready{model="B",version="1"} 1.0' in metrics


def test_failures_are_in_the_index_and_the_log_and_answer_404(repo_server) -> None:  # noqa: ANN001
    served, _ = repo_server
    index = httpx.post(served.url + "/v2/repository/index").json()
    ready = {(entry["name"], entry["version"]) for entry in index if entry["state"] == "READY"}
    assert ready == {("A", "2"), ("A", "1"), ("B", "1"), ("C", "2")}
    failed = {(entry["name"], entry["version"]): entry["reason"] for entry in index if entry["state"] == "UNAVAILABLE"}
    assert set(failed) == {("A", "3"), ("D", "1"), ("E", ""), ("bad name!", "")}
    assert "onnxruntime cannot load" in failed[("A", "3")]
    assert "config.json cannot be read as JSON" in failed[("E", "")] and "num_versions" in failed[("E", "")]
    assert "is not a model name" in failed[("bad name!", "")]
    only_ready = httpx.post(served.url + "/v2/repository/index", json={"ready": True}).json()
    assert {(e["name"], e["version"]) for e in only_ready} == ready
    bad = httpx.post(served.url + "/v2/repository/index", json={"ready": "yes"})
    assert bad.status_code == 400 and "optional boolean 'ready'" in bad.json()["error"]
    gone = infer(served.url, "/v2/models/A/versions/3/infer")
    assert gone.status_code == 404 and "has no version '3' (it failed to load: onnxruntime cannot load" in \
        gone.json()["error"]
    unknown = infer(served.url, "/v2/models/D/infer")
    assert unknown.status_code == 404 and "failed to load" in unknown.json()["error"]
    assert "'A' (versions 2, 1) with inputs 'x' FP32 [-1, 3]" in unknown.json()["error"]
    old = infer(served.url, "/v2/models/C/versions/1/infer")  # policy latest 1: version 1 is not loaded
    assert old.status_code == 404 and "has no version '1'" in old.json()["error"]
    logged = {(line["model"], line.get("version")) for line in served.log_lines()
              if line["msg"] == "model failed to load; the others serve"}
    assert logged == {("A", "3"), ("D", "1"), ("E", None), ("bad name!", None)}


def test_tritonclient_http_and_grpc_pick_models_and_versions(repo_server) -> None:  # noqa: ANN001
    served, target = repo_server
    http = thttp.InferenceServerClient(served.host)
    rpc = tgrpc.InferenceServerClient(target)
    x = np.array(X, dtype=np.float32)
    for client, module in ((http, thttp), (rpc, tgrpc)):
        item = module.InferInput("x", [1, 3], "FP32")
        item.set_data_from_numpy(x)
        assert client.infer("A", [item], model_version="1").as_numpy("y").tolist() == X
        assert client.infer("A", [item]).as_numpy("y").tolist() == [[2.0, 4.0, 6.0]]
        assert client.is_model_ready("A", "2") and client.is_model_ready("B")
        assert not client.is_model_ready("A", "3") and not client.is_model_ready("D")
        assert client.is_server_ready()
    assert rpc.get_model_metadata("A", as_json=True)["versions"] == ["2", "1"]
    index = rpc.get_model_repository_index(as_json=True)["models"]
    states = {(entry["name"], entry.get("version", "")): entry["state"] for entry in index}
    assert states[("A", "1")] == "READY" and states[("D", "1")] == "UNAVAILABLE"
    assert {(e["name"], e["version"]) for e in http.get_model_repository_index()} >= {("A", "1"), ("B", "1")}


def test_policies() -> None:
    assert repository.Policy().choose([1, 3, 2]) == [3, 2, 1]
    assert repository.Policy("latest", count=2).choose([1, 3, 2]) == [3, 2]
    assert repository.Policy("specific", versions=(1, 3)).choose([1, 2]) == [1]


@pytest.mark.parametrize(("text", "words"), [
    ('{"version_policy": {"latest": {"num_versions": 0}}}', "num_versions is 0"),
    ('{"version_policy": {"latest": {}}}', "num_versions is None"),
    ('{"version_policy": {"specific": {"versions": ["1"]}}}', "positive version numbers"),
    ('{"version_policy": {"newest": {}}}', "has version_policy {'newest': {}}"),
    ('{"version_policy": {"all": {}, "latest": {"num_versions": 1}}}', "expected"),
    ('[1]', "has version_policy None"),
])
def test_malformed_policies_name_the_file_and_the_forms(tmp_path: Path, text: str, words: str) -> None:
    (tmp_path / "config.json").write_text(text)
    with pytest.raises(ModelLoadError, match="config.json") as caught:
        repository.policy_of(tmp_path)
    assert words in str(caught.value) and '{"version_policy": {"all": {}}}' in str(caught.value)


def test_a_repository_where_nothing_loads_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "repo" / "D" / "1").mkdir(parents=True)
    (tmp_path / "repo" / "D" / "1" / "model.onnx").write_bytes(b"not onnx")
    done = subprocess.run([sys.executable, "-m", "mlpk.runtimes.server"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "MLPACK_MODEL_DIR": str(tmp_path / "repo"), "MLPACK_PORT": str(free_port())})
    assert done.returncode == 1
    last = json.loads(done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr.strip().splitlines()[-1])
    assert "no model in the repository" in last["msg"] and "D/1: onnxruntime cannot load" in last["msg"]


def test_mlpack_serve_serves_a_repository(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    models.scaled(root / "scorer" / "1", 1.0)
    models.scaled(root / "scorer" / "2", 2.0)
    models.every_dtype(root / "other" / "7")
    port, grpc_port = free_port(), free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([str(Path(sys.executable).with_name("mlpack")), "serve", str(root), "--port", str(port),
                                 "--grpc-port", str(grpc_port)], stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, "MLPACK_CACHE": str(tmp_path / "c")})
    try:
        wait_ready(f"http://127.0.0.1:{port}", proc, log)
        assert infer(f"http://127.0.0.1:{port}", "/v2/models/scorer/versions/1/infer").json()["outputs"][0]["data"] \
            == [1.0, 2.0, 3.0]
        rpc = tgrpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        assert rpc.is_model_ready("other", "7")
        assert {(e["name"], e["version"]) for e in rpc.get_model_repository_index(as_json=True)["models"]} == {
            ("scorer", "2"), ("scorer", "1"), ("other", "7")}
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=30)
    assert code == 0, log.read_text()


def test_mlpack_serve_refuses_name_for_a_repository(mlpack, tmp_path: Path) -> None:  # noqa: ANN001
    models.scaled(tmp_path / "repo" / "scorer" / "1", 1.0)
    done = mlpack("serve", str(tmp_path / "repo"), "--name", "x", "--port", str(free_port()))
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.startswith(f"error: --name x names one model, but {tmp_path / 'repo'} is a model repository")
    assert "Hint: leave --name out" in done.stderr


LAMBDA = """
import json
from mlpk.runtimes import lambda_handler as h
x = {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1.0, 2.0, 3.0]}
def http(path):
    return {"version": "2.0", "rawPath": path, "requestContext": {"http": {"method": "POST", "path": path}},
            "body": json.dumps({"inputs": [x]}), "isBase64Encoded": False}
print(json.dumps({
    "ready": h.MODELS.is_ready(),
    "v1": json.loads(h.handler(http("/v2/models/A/versions/1/infer"))["body"])["outputs"][0]["data"],
    "newest": json.loads(h.handler(http("/v2/models/A/infer"))["body"])["outputs"][0]["data"],
    "root": h.handler(http("/")),
    "direct": h.handler({"model_name": "A", "model_version": "1", "inputs": [x]})["outputs"][0]["data"],
    "direct_unnamed": h.handler({"inputs": [x]}),
    "direct_unknown": h.handler({"model_name": "Z", "inputs": [x]}),
}))
"""


def test_lambda_routes_by_path_and_by_model_name(tmp_path: Path) -> None:
    """The Lambda handler in-process (its module loads the models at import, as Lambda's init does); the real
    runtime interface emulator runs single-model images in test_lambda_rie."""
    root = tmp_path / "repo"
    models.scaled(root / "A" / "1", 1.0)
    models.scaled(root / "A" / "2", 2.0)
    models.scaled(root / "B" / "1", 5.0)
    done = subprocess.run([sys.executable, "-c", LAMBDA], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "MLPACK_MODEL_DIR": str(root)})
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["ready"] is True
    assert answer["v1"] == [1.0, 2.0, 3.0] and answer["newest"] == [2.0, 4.0, 6.0] and answer["direct"] == [1.0, 2.0, 3.0]
    assert answer["root"]["statusCode"] == 400 and "serves several models (A, B)" in answer["root"]["body"]
    assert answer["direct_unnamed"]["statusCode"] == 400 and '"model_name"' in answer["direct_unnamed"]["error"]
    assert answer["direct_unknown"]["statusCode"] == 404 and "unknown model 'Z'" in answer["direct_unknown"]["error"]
