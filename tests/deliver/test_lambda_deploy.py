"""`mlpack deploy lambda` against a moto server (ECR, Lambda and IAM management calls) and a real registry.

moto's ECR answers repository and token calls but cannot store blobs, so the image goes to the local registry
(--push-registry) while the function is created in moto with the ECR repository URI and the image's digest; the
registry is checked to hold exactly that digest. Each case runs the real `mlpack` console script.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from mlpk.packager.oci import Image, image_from_layout, layout, remote
from mlpk.packager.oci.image import canonical_json
from tests.deliver import images
from tests.oci.images import check

pytestmark = [pytest.mark.moto, pytest.mark.registry]
REGION = "eu-west-1"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("mlpack")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=600, check=False,
                          env={**os.environ, **CREDENTIALS, **(env or {})})


def deploy(moto, *args: str) -> dict[str, Any]:
    done = run("--json", "deploy", "lambda", *args, "--endpoint-url", moto.url)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def boto(moto, service: str) -> Any:
    import boto3

    return boto3.client(service, endpoint_url=moto.url, region_name=REGION, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real `mlpack export --target lambda` of the generated MLP."""
    tmp = tmp_path_factory.mktemp("lambda")
    model = images.models.mlp(tmp / "m", seed=0, name="scorer")
    out = tmp / "export"
    done = run("--json", "export", str(model), "--target", "lambda", "--quantize", "none", "-o", str(out))
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def role(moto) -> str:
    trust = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole",
                                                     "Principal": {"Service": "lambda.amazonaws.com"}}]}
    made = boto(moto, "iam").create_role(RoleName="mlpack-test", AssumeRolePolicyDocument=json.dumps(trust))
    return made["Role"]["Arn"]


def test_plan_makes_no_calls(moto, exported: Path, registry) -> None:
    before = moto.requests()
    registry_before = registry.requests()
    done = run("--json", "deploy", "lambda", str(exported), "--function", "planned", "--create-repo", "--role",
               "arn:aws:iam::123456789012:role/x", "--memory", "1024", "--plan", "--endpoint-url", moto.url,
               "--push-registry", registry.host)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)["plan"]
    assert [line.split(":", 1)[0] for line in plan] == ["repository", "push", "function", "version", "alias"]
    assert "CreateRepository(repositoryName=planned, scanOnPush=True, imageTagMutability=IMMUTABLE)" in plan[0]
    assert "Architectures=[x86_64]" in plan[2] and "MemorySize=1024" in plan[2]
    human = run("deploy", "lambda", str(exported), "--function", "planned", "--plan", "--endpoint-url", moto.url)
    assert human.returncode == 0 and "no calls made" in human.stdout
    # printed as written: rich read "[planned]" and "[x86_64]" as markup and dropped them
    assert "repositoryNames=[planned]" in human.stdout and "Architectures=[x86_64]" in human.stdout, human.stdout
    back = run("deploy", "lambda", "--function", "planned", "--rollback", "--plan", "--endpoint-url", moto.url)
    assert back.returncode == 0 and "UpdateAlias(live)" in back.stdout, back.stderr
    assert moto.requests() == before, "--plan reached the AWS endpoint"
    assert registry.requests() == registry_before, "--plan reached the registry"


def test_deploy_update_and_rollback(moto, exported: Path, registry, role: str, tmp_path: Path) -> None:
    common = ("--function", "scorer", "--role", role, "--push-registry", registry.host)
    first = deploy(moto, str(exported), *common, "--create-repo", "--memory", "1024", "--timeout", "30",
                   "--env", "LOG_LEVEL=info")
    assert first["version"] == "1" and first["architecture"] == "x86_64"
    assert first["journal"]["not_done"] == []
    repo = boto(moto, "ecr").describe_repositories(repositoryNames=["scorer"])["repositories"][0]
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["imageTagMutability"] == "IMMUTABLE"
    digest = str(image_from_layout(exported / "oci").digest)
    assert first["image_uri"] == f"{repo['repositoryUri']}@{digest}"
    lam = boto(moto, "lambda")
    config = lam.get_function(FunctionName="scorer")["Configuration"]
    assert config["PackageType"] == "Image" and config["Architectures"] == ["x86_64"]
    assert config["MemorySize"] == 1024 and config["Timeout"] == 30
    assert config["Environment"]["Variables"] == {"LOG_LEVEL": "info"}
    assert lam.get_alias(FunctionName="scorer", Name="live")["FunctionVersion"] == "1"
    in_registry = remote.read(f"{registry.host}/scorer@{digest}")
    assert str(in_registry.digest) == digest
    check(in_registry, f"docker://{registry.host}/scorer@{digest}", "--tls-verify=false")

    update = images.model_update(image_from_layout(exported / "oci"), tmp_path / "v2", seed=5)
    layout.write(update, tmp_path / "v2-oci")
    second = deploy(moto, str(tmp_path / "v2-oci"), *common)
    assert second["version"] == "2"
    assert "updated scorer" in second["journal"]["done"]["function"]
    assert "3 exists" in second["journal"]["done"]["push"], "only the model layer and config go up again"
    assert lam.get_function(FunctionName="scorer")["Code"]["ImageUri"].endswith(str(update.digest))
    assert lam.get_alias(FunctionName="scorer", Name="live")["FunctionVersion"] == "2"
    check(remote.read(f"{registry.host}/scorer@{update.digest}"), f"docker://{registry.host}/scorer@{update.digest}",
          "--tls-verify=false")

    back = deploy(moto, "--function", "scorer", "--rollback")
    assert back["version"] == "1" and back["journal"]["done"]["alias"] == "moved live 2 -> 1"
    assert lam.get_alias(FunctionName="scorer", Name="live")["FunctionVersion"] == "1"
    again = run("deploy", "lambda", "--function", "scorer", "--rollback", "--endpoint-url", moto.url)
    assert again.returncode == 10 and "no earlier version" in again.stderr


def test_architecture_follows_the_image(moto, exported: Path, registry, role: str, tmp_path: Path) -> None:
    """An arm64 image makes an arm64 function (the image is the exported one with its config saying arm64: only
    the architecture matters to these calls)."""
    config = image_from_layout(exported / "oci").config
    config["architecture"] = "arm64"
    arm = Image(canonical_json(config), image_from_layout(exported / "oci").layers)
    layout.write(arm, tmp_path / "arm64")
    result = deploy(moto, str(tmp_path / "arm64"), "--function", "scorer-arm", "--role", role, "--create-repo",
                    "--push-registry", registry.host)
    assert result["architecture"] == "arm64" and result["version"] == "1"
    assert boto(moto, "lambda").get_function(FunctionName="scorer-arm")["Configuration"]["Architectures"] == ["arm64"]


def _one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 10, (done.returncode, done.stderr)
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    return done.stderr


def test_missing_repository_and_missing_role_report_what_was_done(moto, exported: Path, registry) -> None:
    base = ("deploy", "lambda", str(exported), "--endpoint-url", moto.url, "--push-registry", registry.host)
    err = _one_line_error(run(*base, "--function", "norepo"))
    assert "RepositoryNotFoundException" in err and "--create-repo" in err
    assert "done: nothing; not done: repository, push, function, version, alias" in err

    err = _one_line_error(run(*base, "--function", "norole", "--create-repo", "--role",
                              "arn:aws:iam::123456789012:role/missing"))
    assert "lambda.CreateFunction was refused: InvalidParameterValueException (HTTP 400)" in err
    assert "done: repository: created" in err and "push: " in err
    assert "not done: function, version, alias" in err
    assert "norole" not in {f["FunctionName"] for f in boto(moto, "lambda").list_functions()["Functions"]}


def test_bad_credentials_and_unreachable_endpoint(moto_with_auth, exported: Path) -> None:
    err = _one_line_error(run("deploy", "lambda", str(exported), "--function", "fn1", "--create-repo",
                              "--endpoint-url", moto_with_auth.url))
    assert "InvalidClientTokenId (HTTP 403)" in err and "aws sts get-caller-identity" in err
    assert "not done: repository, push" in err
    err = _one_line_error(run("deploy", "lambda", str(exported), "--function", "fn1", "--endpoint-url",
                              "http://127.0.0.1:9"))
    assert "EndpointConnectionError" in err and "127.0.0.1:9" in err
