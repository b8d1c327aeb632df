"""`mlpack export A B …` and `--add-version`: an image serving several models and versions side by side (a model
repository, runtimes/repository.py), each version in a layer of its own, so adding one changes one layer and a push
to the real registry uploads only that layer (and the config); the image runs in the real Docker engine and
answers HTTP and gRPC (tritonclient) for every version, and a corrupt version dropped in leaves the others serving.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from mlpk.packager.oci import image_from_layout
from tests.conftest import free_port
from tests.export import containers, models
from tests.export.test_export import check_image, export, v2_body

pytestmark = [pytest.mark.docker, pytest.mark.slow]

PROFILE = 'extends = "cpu"\nname = "one"\nplatforms = ["linux/amd64"]\n'
X = np.random.default_rng(3).normal(0, 1, (2, 16)).astype(np.float32)


def expected(out: Path, name: str, version: int) -> np.ndarray:
    """What the version the export shipped computes, on the host."""
    session = ort.InferenceSession(str(out / "models" / name / str(version) / "model.onnx"),
                                   providers=["CPUExecutionProvider"])
    return session.run(["probabilities"], {"x": X})[0]


def uploads(registry: Any) -> int:
    """Blob uploads the registry has started so far (its access log)."""
    return sum(1 for line in registry.requests() if line.startswith("POST ") and "/blobs/uploads/" in line)


def layers(report: dict[str, Any]) -> list[tuple[str, str]]:
    return [(layer["name"], layer["digest"]) for layer in report["platforms"][0]["layers"]]


@pytest.mark.registry
def test_two_models_then_a_version_added_pushes_one_layer(mlpack, tmp_path: Path, fresh_registry) -> None:
    profile = tmp_path / "one.toml"
    profile.write_text(PROFILE)
    scorer_1 = models.mlp(tmp_path / "s1", seed=0, name="s")
    scorer_2 = models.mlp(tmp_path / "s2", seed=1, name="s")
    ranker = models.mlp(tmp_path / "r", seed=2, name="r", hidden=8)
    out = tmp_path / "out"
    common = ["--target", str(profile), "--quantize", "none", "-o", str(out)]
    first = export(mlpack, f"scorer={scorer_1}", f"ranker={ranker}", *common,
                   "--push", f"{fresh_registry.host}/models:1")
    assert [(m["name"], m["version"], m["layer"]) for m in first["models"]] == [
        ("ranker", 1, "model ranker/1"), ("scorer", 1, "model scorer/1")]
    assert [name for name, _ in layers(first)] == ["base", "deps", "runtime", "model scorer/1", "model ranker/1"]
    before = uploads(fresh_registry)

    second = export(mlpack, f"scorer={scorer_2}", "--add-version", "--sample-data",
                    str(scorer_2.with_name("s-data.npz")), *common, "--push", f"{fresh_registry.host}/models:2")
    assert layers(second)[:-1] == layers(first), "every layer of the first export is kept as it was"
    assert layers(second)[-1][0] == "model scorer/2"
    assert second["digest"] != first["digest"] and second["tag"] == first["tag"]
    assert [(m["name"], m["version"]) for m in second["models"]] == [("ranker", 1), ("scorer", 1), ("scorer", 2)]
    assert second["model"]["parity"]["samples"] > 0  # the added version passed its own parity gate
    uploaded = {digest for digest, state in second["pushed"]["blobs"].items() if state == "uploaded"}
    config = image_from_layout(out / "oci").config_blob.digest
    assert uploaded == {layers(second)[-1][1], str(config)}, second["pushed"]["blobs"]
    assert uploads(fresh_registry) - before == 2, "the registry received the new layer and the config only"
    check_image(out)
    labels = image_from_layout(out / "oci").config["config"]["Labels"]
    assert labels["dev.mlpack.models"] == "ranker/1,scorer/1,scorer/2" and "dev.mlpack.model.sha256" not in labels
    assert sorted(p.relative_to(out / "models").as_posix() for p in (out / "models").glob("*/*")) == [
        "ranker/1", "scorer/1", "scorer/2"]
    cards = json.loads(mlpack("--json", "inspect", str(out / "oci")).stdout)["images"][0]["model_cards"]
    assert sorted(cards) == ["ranker/1", "scorer/1", "scorer/2"]

    # The image in Docker, with a corrupt version 3 of scorer dropped into its repository.
    import tritonclient.grpc as triton_grpc

    corrupt = tmp_path / "v3"
    corrupt.mkdir(mode=0o755)
    (corrupt / "model.onnx").write_bytes(b"\x08corrupt")
    os.chmod(corrupt / "model.onnx", 0o644)
    tag = containers.load(out / second["platforms"][0]["archive"])
    grpc_port = free_port()
    with containers.container(tag, run_args=("-p", f"127.0.0.1:{grpc_port}:8081", "-v",
                                             f"{corrupt}:/opt/mlpack/models/scorer/3:ro")) as (cid, url):
        containers.wait_ready(url, cid)
        status, index = containers.post_json(url + "/v2/repository/index", {})
        assert status == 200
        states = {(entry["name"], entry["version"]): entry["state"] for entry in index}
        assert states == {("scorer", "2"): "READY", ("scorer", "1"): "READY", ("ranker", "1"): "READY",
                          ("scorer", "3"): "UNAVAILABLE"}, index
        for name, version in (("scorer", 1), ("scorer", 2), ("ranker", 1)):
            status, answer = containers.post_json(f"{url}/v2/models/{name}/versions/{version}/infer", v2_body(X))
            assert status == 200, answer
            got = np.array(answer["outputs"][0]["data"], np.float32).reshape(answer["outputs"][0]["shape"])
            np.testing.assert_allclose(got, expected(out, name, version), rtol=1e-5, atol=1e-6)
        status, newest = containers.post_json(f"{url}/v2/models/scorer/infer", v2_body(X))
        assert status == 200 and newest["model_version"] == "2"
        client = triton_grpc.InferenceServerClient(f"127.0.0.1:{grpc_port}")
        item = triton_grpc.InferInput("x", list(X.shape), "FP32")
        item.set_data_from_numpy(X)
        np.testing.assert_allclose(client.infer("scorer", [item], model_version="1").as_numpy("probabilities"),
                                   expected(out, "scorer", 1), rtol=1e-5, atol=1e-6)
        assert not client.is_model_ready("scorer", "3") and client.is_model_ready("ranker", "1")
        assert "model failed to load; the others serve" in containers.logs(cid)
    containers.docker("rmi", "-f", tag)


def test_a_version_added_to_a_one_model_export_serves_both(mlpack, tmp_path: Path) -> None:
    profile = tmp_path / "one.toml"
    profile.write_text(PROFILE + "grpc_port = 0\n")
    out = tmp_path / "out"
    common = ["--target", str(profile), "--quantize", "none", "-o", str(out)]
    first = export(mlpack, str(models.mlp(tmp_path / "v1", seed=0, name="scorer")), *common)
    assert [name for name, _ in layers(first)] == ["base", "deps", "runtime", "model"]
    again = mlpack("export", f"scorer/1={models.mlp(tmp_path / 'v9', seed=9, name='scorer')}", "--add-version",
                   *common)
    assert again.returncode == 2 and "model scorer version 1 is already in the export" in again.stderr
    second = export(mlpack, str(models.mlp(tmp_path / "v2", seed=1, name="scorer")), "--add-version", *common)
    assert layers(second)[:-1] == layers(first) and layers(second)[-1][0] == "model scorer/2"
    assert [(m["name"], m["version"], m["layer"]) for m in second["models"]] == [
        ("scorer", 1, "model"), ("scorer", 2, "model scorer/2")]
    tag = containers.load(out / second["platforms"][0]["archive"])
    with containers.container(tag) as (cid, url):
        containers.wait_ready(url, cid)
        for version in (1, 2):
            status, answer = containers.post_json(f"{url}/v2/models/scorer/versions/{version}/infer", v2_body(X))
            assert status == 200, answer
            got = np.array(answer["outputs"][0]["data"], np.float32).reshape(answer["outputs"][0]["shape"])
            np.testing.assert_allclose(got, expected(out, "scorer", version), rtol=1e-5, atol=1e-6)
    containers.docker("rmi", "-f", tag)


def test_repository_user_errors(mlpack, tmp_path: Path) -> None:
    a, b = models.mlp(tmp_path / "a", name="a"), models.mlp(tmp_path / "b", name="b")
    cases = [
        ([str(a), str(b), "--sample-data", str(a.with_name("a-data.npz"))], "--sample-data describes one model"),
        ([str(a), str(b), "--name", "x"], "--name describes one model"),
        ([str(a), "--add-version"], "--add-version adds to the export at --out"),
        ([f"a={a}", f"a/1={b}"], "model a version 1 is already in this export"),
        ([f"a={a}", "--prebuild-engine"], "--prebuild-engine builds the engine of a one-model image"),
    ]
    for args, needle in cases:
        out = tmp_path / "out"
        done = mlpack("export", *args, "--target", "cpu", "-o", str(out), timeout=300)
        assert done.returncode == 2, (args, done.stderr)
        assert needle in done.stderr and "Hint:" in done.stderr and "Traceback" not in done.stderr, done.stderr
        assert done.stderr.count("\n") == 1 and not out.exists()
