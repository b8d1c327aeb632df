"""`mlpack deliver device|bundle|delta|apply` against a real sshd on loopback with the local Docker engine behind it.

The image is a real `mlpack export` (cpu target, amd64 only) stacked on a tiny layer of the test's own
(images.unique_stack), so its layers are new to the shared engine: a first delivery must send all of them. The
model-only update swaps the model layer (images.model_update). The service is checked from the host through its
published port, and its answers compared with onnxruntime running the model it should serve.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from mlpk.packager.oci import Image, image_from_layout, image_from_tarball, index, layout, with_config
from mlpk.packager.oci.image import canonical_json
from mlpk.packager.oci.validate import validate
from tests.conftest import free_port
from tests.deliver import images
from tests.export import containers

pytestmark = [pytest.mark.docker, pytest.mark.sshd]
X = np.random.default_rng(3).normal(0, 1, (2, 16)).astype(np.float32)


@pytest.fixture(scope="module")
def token() -> str:
    return uuid.uuid4().hex[:10]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, token: str, exported_cpu: Path) -> Iterator[dict[str, Any]]:
    """v1 (exported), v2 and v3 (model-only updates of v1) as OCI layouts, and the models each serves."""
    tmp = tmp_path_factory.mktemp("device")
    v1 = images.unique_stack(image_from_layout(exported_cpu / "oci"), token)
    out: dict[str, Any] = {"dir": tmp, "models": {"v1": exported_cpu / "model" / "model.onnx"}}
    layout.write(v1, tmp / "v1")
    for name, seed in (("v2", 11), ("v3", 12)):
        layout.write(images.model_update(v1, tmp / f"m{name}", seed), tmp / name)
        out["models"][name] = tmp / f"m{name}" / "model.onnx"
    out["images"] = {name: image_from_layout(tmp / name) for name in ("v1", "v2", "v3")}
    yield out
    for line in images.docker("image", "ls", "--format", "{{.Repository}}:{{.Tag}}").splitlines():
        if token in line:
            images.docker("rmi", "-f", line, check=False)


def expected(model: Path) -> np.ndarray:
    session = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"x": X})[0]


def served(url: str) -> np.ndarray:
    status, answer = containers.post_json(f"{url}/v2/models/scorer/infer", {"inputs": [
        {"name": "x", "shape": list(X.shape), "datatype": "FP32", "data": X.ravel().tolist()}]})
    assert status == 200, answer
    return np.array(answer["outputs"][0]["data"], dtype=np.float32).reshape(2, 4)


def deliver(mlpack, sshd, *args: str) -> dict[str, Any]:
    done = mlpack("--json", "deliver", "device", sshd.url, *args, *sshd.args(), timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_first_full_then_model_layer_only_then_rollback(mlpack, sshd, stack: dict[str, Any], token: str) -> None:
    service, port, grpc_port = f"svc-{token}", free_port(), free_port()
    common = ("--service", service, "--port", str(port), "--grpc-port", str(grpc_port))
    try:
        v1 = stack["images"]["v1"]
        first = deliver(mlpack, sshd, str(stack["dir"] / "v1"), *common, "--tag", f"test/scorer-{token}:v1")
        assert first["layers"] == first["layers_sent"] == len(v1.layers) == 5
        layer_total = sum(layer.size for layer in v1.layers)
        assert layer_total < first["bytes_sent"] < layer_total + 64 * 1024  # the blobs plus tar headers and JSON
        url = f"http://127.0.0.1:{port}"
        np.testing.assert_allclose(served(url), expected(stack["models"]["v1"]), rtol=1e-5, atol=1e-6)
        import tritonclient.grpc as triton_grpc

        assert triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}").is_model_ready("scorer")  # published

        v2 = stack["images"]["v2"]
        second = deliver(mlpack, sshd, str(stack["dir"] / "v2"), *common, "--tag", f"test/scorer-{token}:v2")
        assert second["layers_sent"] == 1
        model_layer = v2.layers[-1].size
        assert model_layer < second["bytes_sent"] < model_layer + 32 * 1024
        print(f"device delivery: first {first['bytes_sent']} bytes (5 layers), model-only update "
              f"{second['bytes_sent']} bytes (1 layer), ratio {second['bytes_sent'] / first['bytes_sent']:.4f}")
        np.testing.assert_allclose(served(url), expected(stack["models"]["v2"]), rtol=1e-5, atol=1e-6)
        assert images.docker("inspect", "--format", "{{index .Config.Labels \"dev.mlpack.service\"}}",
                             service) == service

        broken = with_config(v2, entrypoint=["/usr/bin/python3", "-c", "import time; time.sleep(600)"], cmd=[])
        layout.write(broken, stack["dir"] / "broken")
        failed = mlpack("deliver", "device", sshd.url, str(stack["dir"] / "broken"), *common, "--ready-timeout", "5",
                        "--tag", f"test/scorer-{token}:broken", *sshd.args())
        assert failed.returncode == 10 and "did not answer /v2/health/ready" in failed.stderr, failed.stderr
        assert "the previous image" in failed.stderr and "runs again" in failed.stderr
        assert "done: inventory" in failed.stderr and "not done: restart" in failed.stderr
        np.testing.assert_allclose(served(url), expected(stack["models"]["v2"]), rtol=1e-5, atol=1e-6)

        back = deliver(mlpack, sshd, "--rollback", *common)
        assert back["journal"]["not_done"] == []
        np.testing.assert_allclose(served(url), expected(stack["models"]["v1"]), rtol=1e-5, atol=1e-6)
        assert images.docker("image", "inspect", "--format", "{{.Id}}", f"mlpack-device/{service}:previous") == \
            images.docker("image", "inspect", "--format", "{{.Id}}", f"test/scorer-{token}:v2")
    finally:
        images.docker("rm", "-f", service, check=False)
        for tag in ("current", "previous"):
            images.docker("rmi", f"mlpack-device/{service}:{tag}", check=False)


def test_bundle_and_delta_apply_offline(mlpack, sshd, stack: dict[str, Any], token: str, tmp_path: Path) -> None:
    v1, v3 = stack["images"]["v1"], stack["images"]["v3"]
    bundle = tmp_path / "v1.tar"
    done = mlpack("--json", "deliver", "bundle", str(stack["dir"] / "v1"), "--out", str(bundle), "--tag",
                  f"test/bundle-{token}:v1")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["included"] == [0, 1, 2, 3, 4]
    subprocess.run(["sha256sum", "-c", bundle.name + ".sha256"], cwd=tmp_path, check=True, capture_output=True)
    validate(image_from_tarball(bundle))
    subprocess.run(["skopeo", "inspect", "--raw", f"docker-archive:{bundle}"], check=True, capture_output=True)

    delta = tmp_path / "v3-delta.tar"
    done = mlpack("--json", "deliver", "delta", "--from", str(stack["dir"] / "v1"), "--to", str(stack["dir"] / "v3"),
                  "--out", str(delta), "--tag", f"test/scorer-{token}:v3")
    assert done.returncode == 0, done.stderr
    info = json.loads(done.stdout)
    assert info["included"] == [4] and info["layer_bytes"] == v3.layers[-1].size
    assert delta.stat().st_size < v3.layers[-1].size + 32 * 1024
    print(f"delta {delta.stat().st_size} bytes vs full bundle {bundle.stat().st_size} bytes")

    broken = tmp_path / "broken" / delta.name
    broken.parent.mkdir()
    damaged = bytearray(delta.read_bytes())
    damaged[len(damaged) // 3] ^= 0xFF
    broken.write_bytes(bytes(damaged))
    (broken.parent / (delta.name + ".sha256")).write_text((tmp_path / (delta.name + ".sha256")).read_text())
    refused = mlpack("deliver", "apply", str(broken))
    assert refused.returncode == 10 and "says sha256:" in refused.stderr and refused.stderr.count("\n") == 1

    # The bundle goes on through SSH; then the engine has v1 and the delta applies locally, with no network.
    pushed = mlpack("--json", "deliver", "apply", str(bundle), "--device", sshd.url, *sshd.args())
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["bytes_sent"] == bundle.stat().st_size
    applied = mlpack("--json", "deliver", "apply", str(delta))
    assert applied.returncode == 0, applied.stderr
    assert json.loads(applied.stdout)["layers_sent"] == 1
    layers = json.loads(images.docker("image", "inspect", "--format", "{{json .RootFS.Layers}}",
                                      f"test/scorer-{token}:v3"))
    assert layers == [str(d) for d in v3.config["rootfs"]["diff_ids"]]
    with containers.container(f"test/scorer-{token}:v3") as (cid, url):
        containers.wait_ready(url, cid)
        np.testing.assert_allclose(served(url), expected(stack["models"]["v3"]), rtol=1e-5, atol=1e-6)

    orphan = tmp_path / "orphan.tar"
    other = images.unique_stack(v1, uuid.uuid4().hex[:10])
    layout.write(other, tmp_path / "other")
    layout.write(images.model_update(other, tmp_path / "mo", 13), tmp_path / "other2")
    assert mlpack("deliver", "delta", "--from", str(tmp_path / "other"), "--to", str(tmp_path / "other2"),
                  "--out", str(orphan)).returncode == 0
    refused = mlpack("deliver", "apply", str(orphan))
    assert refused.returncode == 10 and "lacks the layers this delta leaves out" in refused.stderr
    assert "not done: inventory, load" in refused.stderr and refused.stderr.count("\n") == 1


def test_unreachable_host_bad_key_and_unknown_host_key(mlpack, sshd, stack: dict[str, Any], tmp_path: Path,
                                                       token: str) -> None:
    image = str(stack["dir"] / "v1")
    done = mlpack("deliver", "device", "ssh://root@127.0.0.1:9", image, *sshd.args())
    assert done.returncode == 10 and "unreachable" in done.stderr and "ECONNREFUSED" in done.stderr, done.stderr
    assert "(done: nothing; not done: connect, inventory, send, tag, restart)" in done.stderr
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / "stranger")], check=True)
    done = mlpack("deliver", "device", sshd.url, image, "--identity", str(tmp_path / "stranger"), "--known-hosts",
                  str(sshd.known_hosts))
    assert done.returncode == 10 and "AuthenticationException" in done.stderr, done.stderr
    done = mlpack("deliver", "device", sshd.url, image, "--identity", str(sshd.identity))
    assert done.returncode == 10 and "UnknownHostKey" in done.stderr and "--known-hosts" in done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr

    config = stack["images"]["v1"].config
    config["architecture"] = "arm64"
    layout.write(Image(canonical_json(config), stack["images"]["v1"].layers), tmp_path / "arm64")
    done = mlpack("deliver", "device", sshd.url, str(tmp_path / "arm64"), *sshd.args())
    assert done.returncode == 10 and "is for linux/arm64, but" in done.stderr and "runs linux/amd64" in done.stderr
    assert "not done: inventory, send, tag, restart" in done.stderr, done.stderr

    # From a multi-platform image, the one for the engine's platform goes.
    layout.write(index(stack["images"]["v1"], image_from_layout(tmp_path / "arm64")), tmp_path / "both")
    both = json.loads(mlpack("--json", "deliver", "device", sshd.url, str(tmp_path / "both"), "--no-restart",
                             "--tag", f"test/index-{token}:1", *sshd.args()).stdout)
    assert both["image"] == str(stack["images"]["v1"].digest) and both["service"] is None
