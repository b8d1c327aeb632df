"""`mlpack doctor` on this machine, after tests/services/provision.sh."""

from __future__ import annotations

import json

import pytest

from tests.conftest import IN_CI


def test_doctor_json_lists_every_check(mlpack) -> None:
    done = mlpack("--json", "doctor")
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    assert set(checks) == {"python", "docker engine", "docker swarm", "arm64 emulation", "skopeo", "umoci",
                           "registry credentials",
                           "lambda emulator", "onnxruntime", "gpu / tensorrt"}
    for check in checks.values():
        assert check["status"] in ("ok", "warn", "fail")
        assert check["detail"]
        if check["status"] != "ok":
            assert check["fix"], f"{check['name']} is {check['status']} without a fix"
    assert done.returncode == (1 if any(c["status"] == "fail" for c in checks.values()) else 0)


@pytest.mark.docker
@pytest.mark.qemu
@pytest.mark.lambda_rie
def test_doctor_after_provisioning_is_ok_except_gpu(mlpack) -> None:
    """The acceptance of the foundation: on this machine (no GPU) only the GPU check warns, with its reason."""
    done = mlpack("--json", "doctor")
    checks = {c["name"]: c for c in json.loads(done.stdout)["checks"]}
    gpu = checks.pop("gpu / tensorrt")
    assert {name: c["status"] for name, c in checks.items() if c["status"] != "ok"} == {}
    if IN_CI:  # CI machines of this project have no GPU
        assert gpu["status"] == "warn" and "TensorRT" in gpu["detail"] and gpu["fix"]
    assert done.returncode == 0
    human = mlpack("doctor")
    assert "gpu / tensorrt" in human.stdout and "warn" in human.stdout
