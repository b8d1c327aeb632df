"""`mlpack export` per target, against the real Docker engine, qemu and the Lambda Runtime Interface Emulator.

Each export test runs the image it built and compares its answers with onnxruntime on the host running the model
the image ships (out/model/model.onnx), then validates the image (our validator and skopeo).
"""

from __future__ import annotations

import base64
import json
import re
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from mlpk.packager.assemble import SBOM_PATH
from mlpk.packager.oci import image_from_layout, layout
from mlpk.packager.oci.validate import validate
from tests.conftest import free_port
from tests.export import containers, models

pytestmark = [pytest.mark.docker, pytest.mark.slow]


def export(mlpack, *args: str) -> dict[str, Any]:
    done = mlpack("--json", "export", *args, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def host_outputs(out: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(out / "model" / "model.onnx"), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"x": x})[0]


def v2_body(x: np.ndarray) -> dict[str, Any]:
    return {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}]}


def check_image(out: Path) -> None:
    validate(layout.read(out / "oci"))
    subprocess.run(["skopeo", "inspect", "--raw", f"oci:{out / 'oci'}"], check=True, capture_output=True)


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return models.mlp(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="module")
def inputs() -> np.ndarray:
    return np.random.default_rng(7).normal(0, 1, (3, 16)).astype(np.float32)


@pytest.mark.qemu
def test_cpu_index_runs_on_amd64_and_arm64(mlpack, mlp: Path, inputs: np.ndarray, tmp_path: Path) -> None:
    import tritonclient.grpc as triton_grpc
    import tritonclient.http as triton

    out = tmp_path / "cpu"
    report = export(mlpack, str(mlp), "--target", "cpu", "-o", str(out))
    assert [p["platform"] for p in report["platforms"]] == ["linux/amd64", "linux/arm64"]
    index = json.loads((out / "oci" / "index.json").read_text())
    top = index["manifests"][0]
    assert top["mediaType"] in ("application/vnd.oci.image.index.v1+json",
                                "application/vnd.docker.distribution.manifest.list.v2+json")
    check_image(out)
    expected = host_outputs(out, inputs)
    name = report["model"]["name"]
    assert name == mlp.stem == "mlp"  # the name `mlpack serve mlp.onnx` answers under on a host
    for build in report["platforms"]:
        tag = containers.load(out / build["archive"])
        config = json.loads(containers.docker("image", "inspect", "--format", "{{json .Config}}", tag))
        assert set(config["ExposedPorts"]) == {"8080/tcp", "8081/tcp"} and "MLPACK_GRPC_PORT=8081" in config["Env"]
        grpc_port = free_port()
        with containers.container(tag, platform=build["platform"],
                                  run_args=("-p", f"127.0.0.1:{grpc_port}:8081")) as (cid, url):
            containers.wait_ready(url, cid)
            # gRPC in the image, on both platforms (the server's HTTP/2, protobuf's wheel for each): the same answer as HTTP's
            rpc = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
            assert rpc.is_server_ready() and rpc.is_model_ready(name)
            tensor = triton_grpc.InferInput("x", list(inputs.shape), "FP32")
            tensor.set_data_from_numpy(inputs)
            np.testing.assert_allclose(rpc.infer(name, [tensor]).as_numpy("probabilities"), expected, rtol=1e-5,
                                       atol=1e-6)
            with pytest.raises(triton_grpc.InferenceServerException, match="INVALID_ARGUMENT"):
                wrong = triton_grpc.InferInput("x", [3, 5], "FP32")
                wrong.set_data_from_numpy(np.ones((3, 5), np.float32))
                rpc.infer(name, [wrong])
            if build["platform"] == "linux/amd64":
                client = triton.InferenceServerClient(url.removeprefix("http://"))
                assert client.is_model_ready(name)
                tensor = triton.InferInput("x", list(inputs.shape), "FP32")
                tensor.set_data_from_numpy(inputs, binary_data=True)
                got = client.infer(name, [tensor]).as_numpy("probabilities")
                np.testing.assert_array_equal(got, expected)
                # The image's CycloneDX SBOM: the base's Debian packages and every installed distribution.
                sbom = json.loads(containers.docker("exec", cid, "/usr/bin/python3", "-c",
                                                    f"print(open('{SBOM_PATH}').read())"))
                components = {c["name"]: c for c in sbom["components"]}
                assert sbom["bomFormat"] == "CycloneDX"
                assert components["onnxruntime"]["version"] == "1.31.1"
                assert components["onnxruntime"]["purl"].startswith("pkg:pypi/onnxruntime@")
                assert {"numpy", "httptools", "orjson"} <= set(components)
                assert any(c.get("purl", "").startswith("pkg:deb/debian/python3") for c in sbom["components"])
            else:
                status, answer = containers.post_json(f"{url}/v2/models/{name}/infer", v2_body(inputs))
                assert status == 200, answer
                got = np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(expected.shape)
                np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)  # another CPU's kernels
                assert "aarch64" in containers.docker("exec", cid, "/usr/bin/python3", "-c",
                                                      "import platform; print(platform.machine())")


@pytest.mark.qemu
def test_jetson_with_debian_base_logs_providers_in_order(mlpack, mlp: Path, inputs: np.ndarray,
                                                        tmp_path: Path) -> None:
    """The L4T base cannot be pulled here: the profile is overridden to the Debian arm64 base and CPU onnxruntime,
    so the image runs under qemu, tries TensorRT -> CUDA -> CPU and serves on the CPU."""
    profile = tmp_path / "jetson-here.toml"
    profile.write_text(
        'extends = "jetson"\nname = "jetson-here"\npython = "3.11"\n'
        '[base]\nkind = "debian"\nsuite = "bookworm"\n'
        '[wheels]\nextra_index_required = false\nrequirements = ["onnxruntime==1.31.1", "numpy>=1.26", '
        '"httptools>=0.6", "orjson>=3.9", "prometheus-client>=0.20"]\n')
    out = tmp_path / "jetson"
    report = export(mlpack, str(mlp), "--target", str(profile), "-o", str(out))
    assert [p["platform"] for p in report["platforms"]] == ["linux/arm64"]
    assert report["optimization"]["requested"] == "fp16"  # the TensorRT targets' default
    check_image(out)
    tag = containers.load(out / report["platforms"][0]["archive"])
    with containers.container(tag, platform="linux/arm64") as (cid, url):
        containers.wait_ready(url, cid)
        status, answer = containers.post_json(f"{url}/v2/models/{report['model']['name']}/infer", v2_body(inputs))
        assert status == 200, answer
        expected = host_outputs(out, inputs)
        got = np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(expected.shape)
        # The shipped model is FP16 (the TensorRT targets' default): arm64 kernels compute in half precision where
        # x86-64 ones widen to float, so the two CPUs agree to FP16's resolution (2^-11 relative), not bit for bit.
        np.testing.assert_allclose(got, expected, rtol=5e-3, atol=2e-3)
        loaded = next(json.loads(line) for line in containers.logs(cid).splitlines()
                      if line.startswith("{") and "model loaded" in line)
    assert loaded["providers_requested"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider",
                                             "CPUExecutionProvider"]
    assert loaded["providers_unavailable"] == ["TensorrtExecutionProvider", "CUDAExecutionProvider"]
    assert loaded["providers_active"] == ["CPUExecutionProvider"]


def _invoke(url: str, event: dict[str, Any]) -> tuple[int, Any]:
    return containers.post_json(f"{url}/2015-03-31/functions/function/invocations", event)


@pytest.mark.lambda_rie
@pytest.mark.parametrize("target", ["lambda", "lambda-arm64"])
def test_lambda_images_answer_through_the_emulator(mlpack, mlp: Path, inputs: np.ndarray, tmp_path: Path,
                                                   lambda_rie: dict[str, Path], target: str) -> None:
    if target == "lambda-arm64":
        from tests.conftest import require

        require("qemu")
    out = tmp_path / target
    report = export(mlpack, str(mlp), "--target", target, "-o", str(out))
    build = report["platforms"][0]
    assert len(report["platforms"]) == 1
    index = json.loads((out / "oci" / "index.json").read_text())
    assert index["manifests"][0]["mediaType"].endswith(("manifest.v1+json", "manifest.v2+json")), \
        "Lambda rejects image indexes: a single-arch target writes a plain manifest"
    check_image(out)
    arch = build["platform"].rsplit("/", 1)[-1]
    rie = lambda_rie[arch]
    tag = containers.load(out / build["archive"])
    expected = host_outputs(out, inputs)
    started = time.monotonic()
    with containers.container(tag, "/usr/bin/python3", "-m", "awslambdaric", "mlpk.runtimes.lambda_handler.handler",
                              platform=build["platform"],
                              run_args=("-v", f"{rie.parent}:/aws-lambda:ro", "--entrypoint",
                                        f"/aws-lambda/{rie.name}")) as (cid, url):
        direct = None
        while time.monotonic() - started < 240:
            try:
                direct = _invoke(url, v2_body(inputs))
                break
            except OSError:
                time.sleep(1)
        assert direct is not None and direct[0] == 200, direct
        print(f"{target}: first invocation answered {time.monotonic() - started:.1f} s after docker run")
        got = np.array(direct[1]["outputs"][0]["data"], dtype=np.float32).reshape(expected.shape)
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        name = report["model"]["name"]
        body = json.dumps(v2_body(inputs))
        http_v2 = {"version": "2.0", "rawPath": f"/v2/models/{name}/infer", "body": body, "isBase64Encoded": False,
                   "requestContext": {"http": {"method": "POST", "path": f"/v2/models/{name}/infer"}}}
        status, answer = _invoke(url, http_v2)
        assert status == 200 and answer["statusCode"] == 200, answer
        assert np.allclose(json.loads(answer["body"])["outputs"][0]["data"], got.ravel())
        v1 = {"resource": "/{proxy+}", "path": f"/v2/models/{name}/infer", "httpMethod": "POST",
              "headers": {"Content-Type": "application/json"}, "requestContext": {"stage": "prod"}, "body": body,
              "isBase64Encoded": False}
        status, answer = _invoke(url, v1)
        assert status == 200 and answer["statusCode"] == 200, answer
        assert np.allclose(json.loads(answer["body"])["outputs"][0]["data"], got.ravel())
        function_url = {"version": "2.0", "rawPath": "/", "rawQueryString": "", "headers": {},
                        "requestContext": {"domainName": "abc.lambda-url.eu-west-1.on.aws",
                                           "http": {"method": "POST", "path": "/"}},
                        "body": base64.b64encode(body.encode()).decode(), "isBase64Encoded": True}
        status, answer = _invoke(url, function_url)
        assert status == 200 and answer["statusCode"] == 200, answer
        assert np.allclose(json.loads(answer["body"])["outputs"][0]["data"], got.ravel())
        status, answer = _invoke(url, {"version": "2.0", "requestContext": {"http": {"method": "POST"}},
                                       "rawPath": f"/v2/models/{name}/infer", "body": "{not json"})
        assert status == 200 and answer["statusCode"] == 400, answer
        status, answer = _invoke(url, v2_body(inputs))
        assert status == 200 and "outputs" in answer, "the function keeps serving after a malformed event"
        init = re.search(r"INIT REPORT\(durationMs: ([0-9.]+)\)", containers.logs(cid))
        assert init, containers.logs(cid)[-2000:]
        print(f"{target}: Lambda init (model session created outside the handler) took {float(init.group(1)):.0f} ms "
              "as the Runtime Interface Emulator reports it")


def test_model_only_change_keeps_every_other_layer(mlpack, tmp_path: Path) -> None:
    first = models.mlp(tmp_path / "v1", seed=0, name="scorer")
    second = models.mlp(tmp_path / "v2", seed=1, name="scorer")
    started = time.perf_counter()
    a = export(mlpack, str(first), "--target", "lambda", "--quantize", "none", "-o", str(tmp_path / "a"))
    cold = time.perf_counter() - started
    started = time.perf_counter()
    b = export(mlpack, str(second), "--target", "lambda", "--quantize", "none", "-o", str(tmp_path / "b"))
    warm = time.perf_counter() - started
    layers_a = {layer["name"]: layer["digest"] for layer in a["platforms"][0]["layers"]}
    layers_b = {layer["name"]: layer["digest"] for layer in b["platforms"][0]["layers"]}
    assert list(layers_a) == ["base", "deps", "runtime", "model"]
    assert {k for k in layers_a if layers_a[k] != layers_b[k]} == {"model"}
    assert a["digest"] != b["digest"]
    assert b["cached_layers_read_bytes"] == 0, "no layer the first export made or checked is read back (issue 16)"
    print(f"re-export after a model-only change: {warm:.1f} s vs {cold:.1f} s for the first export "
          f"(ratio {warm / cold:.2f}; caches of earlier tests may warm the first)")
    same = export(mlpack, str(first), "--target", "lambda", "--quantize", "none", "-o", str(tmp_path / "a"))
    assert same["digest"] == a["digest"], "the same inputs give the same digest"
    check_image(tmp_path / "a")
    assert image_from_layout(tmp_path / "a" / "oci").config["config"]["User"] == "65532:65532"


def test_over_budget_fails_with_the_layer_table(mlpack, mlp: Path, tmp_path: Path) -> None:
    out = tmp_path / "small"
    done = mlpack("export", str(mlp), "--target", "lambda", "--quantize", "none", "--budget-mb", "60", "-o",
                  str(out), timeout=900)
    assert done.returncode == 7, done.stderr
    line = done.stderr.strip()
    assert "\n" not in line and "over its budget of 60 MB" in line
    for name in ("base", "deps", "runtime", "model"):
        assert f"{name} " in line.split("(layers:", 1)[1]
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".mlpack-export")]


def test_user_errors_are_one_line_and_write_nothing(mlpack, tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 10)
    model = models.mlp(tmp_path / "m")
    cases = [
        ([str(corrupt), "--target", "cpu"], (3, 4), "corrupt.onnx"),
        ([str(model), "--target", "lamda"], (2,), "did you mean 'lambda'"),
        ([str(model), "--target", "cpu", "--name", "a/b"], (2,), "--name='a/b' is not a model name"),
        ([str(model), "--target", "lambda", "--base", "127.0.0.1:9/nothing/here:1"], (8,), "127.0.0.1:9"),
    ]
    for args, codes, needle in cases:
        out = tmp_path / "out"
        done = mlpack("export", *args, "-o", str(out), timeout=600)
        assert done.returncode in codes, (args, done.returncode, done.stderr)
        assert needle in done.stderr and "Hint:" in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
        assert not out.exists()


@pytest.mark.registry
def test_calibrated_int8_on_a_layout_base_pushed_to_a_registry(mlpack, mlp: Path, inputs: np.ndarray,
                                                               tmp_path: Path, registry) -> None:
    """The flags the other tests leave at their defaults: --quantize int8-static with --calibration (the QDQ model
    ships, its figures in the report), --base from an OCI layout (offline bases), and --push to a registry."""
    from mlpk.packager.base import pipeline

    base_dir = tmp_path / "base"
    pipeline.write(pipeline.build(pipeline.BaseSpec(suite="bookworm", arch="amd64")), base_dir)
    base = image_from_layout(base_dir, "linux/amd64")
    ref = f"{registry.host}/scorer:int8"
    out = tmp_path / "out"
    report = export(mlpack, str(mlp), "--target", "lambda", "--quantize", "int8-static", "--calibration",
                    str(mlp.with_name("mlp-data.npz")), "--base", f"oci:{base_dir}", "--push", ref, "-o", str(out))
    optimization = report["optimization"]
    assert optimization["mode"] == "int8-static" and optimization["required"], optimization
    assert optimization["accuracy"]["cosine"] > 0.99 and optimization["size"]["after_bytes"] > 0  # tiny: QDQ adds bytes
    ops = {node.op_type for node in onnx.load(str(out / "model" / "model.onnx")).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops, "the quantized model is the one that ships"
    img = image_from_layout(out / "oci")
    assert img.config["config"]["Labels"]["dev.mlpack.base.digest"] == str(base.digest)
    assert [str(layer.digest) for layer in img.layers[:len(base.layers)]] == [str(la.digest) for la in base.layers]
    assert report["pushed"]["digest"] == report["digest"] == str(img.digest)
    remote = json.loads(subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{ref}"], check=True,
                                       capture_output=True, text=True).stdout)
    assert remote["Digest"] == report["digest"] and remote["Architecture"] == "amd64"
    expected = ort.InferenceSession(str(out / "model" / "model.onnx")).run(None, {"x": inputs})[0]
    reference = ort.InferenceSession(str(mlp)).run(None, {"x": inputs})[0]
    # INT8 of a softmax head: probabilities in steps of 1/255 and a few hundredths off, the same classes
    np.testing.assert_array_equal(expected.argmax(1), reference.argmax(1))
    np.testing.assert_allclose(expected, reference, atol=0.15)
