"""`mlpack deploy lambda`: an image to a Lambda function with a version and an alias.

    ecr.DescribeRepositories (CreateRepository with scan-on-push and tag immutability when --create-repo)
    ecr.GetAuthorizationToken -> push the image through mlpk.packager.oci.remote (only missing blobs go up)
    lambda.GetFunction -> CreateFunction (PackageType Image, the image's architecture) + waiter function_active_v2
                       or UpdateFunctionCode (+ UpdateFunctionConfiguration) + waiter function_updated_v2
    lambda.PublishVersion -> GetAlias -> CreateAlias or UpdateAlias

The function runs the image by digest (REPOSITORY_URI@sha256:…), so a version always names exactly what was
pushed. `rollback` moves the alias to the highest published version below the one it points at.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field
from typing import Any

from mlpk.packager.deliver import aws
from mlpk.packager.deliver.images import Resolved, resolve
from mlpk.packager.deliver.journal import Journal, Step
from mlpk.packager.errors import ConfigError, DeployError
from mlpk.packager.oci.auth import Credentials
from mlpk.packager.oci.build import write_outputs
from mlpk.packager.oci.client import RegistryClient
from mlpk.packager.oci.reference import Reference

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# ECR's repositoryName constraint (ECR API reference, CreateRepository).
_REPO = re.compile(r"^(?=.{2,256}$)(?:[a-z0-9]+(?:[._-][a-z0-9]+)*/)*[a-z0-9]+(?:[._-][a-z0-9]+)*$")
# Lambda's patterns (its API reference: CreateAlias Name, CreateFunction Role, Environment Variables keys).
_ALIAS = re.compile(r"(?!\d+$)[a-zA-Z0-9_-]{1,128}")
_ROLE = re.compile(r"arn:aws[a-zA-Z-]*:iam::\d{12}:role/[\w+=,.@/-]+")
_ENV_KEY = re.compile(r"[a-zA-Z][a-zA-Z0-9_]*")


@dataclass(frozen=True, slots=True)
class LambdaRequest:
    """A deployment: which image, which function, and how."""

    image: str
    function: str
    role: str | None = None
    memory: int | None = None
    timeout: int | None = None
    alias: str = "live"
    repository: str | None = None  # default: the function name, lowercased
    create_repo: bool = False
    scan_on_push: bool = True
    immutable_tags: bool = True
    env: dict[str, str] = field(default_factory=dict)
    platform: str | None = None
    aws: aws.Settings = field(default_factory=aws.Settings)
    # Push the blobs to this registry host instead of the ECR repository's (a mirror, or a local registry in
    # tests: an emulator's ECR cannot store blobs). The function still names the ECR repository URI.
    push_registry: str | None = None

    def check(self) -> None:
        if not _NAME.match(self.function):
            raise ConfigError(f"function name '{self.function}' is not 1-64 letters, digits, '-' or '_'",
                              hint="e.g. --function scorer")
        if not _REPO.match(self.repo):
            raise ConfigError(f"ECR repository name '{self.repo}' is not 2-256 lowercase letters, digits and . _ - /",
                              hint="name one with --repository")
        if self.memory is not None and not 128 <= self.memory <= 10240:
            raise ConfigError(f"--memory {self.memory} is outside Lambda's 128-10240 MB", hint="e.g. --memory 1024")
        if self.timeout is not None and not 1 <= self.timeout <= 900:
            raise ConfigError(f"--timeout {self.timeout} is outside Lambda's 1-900 s", hint="e.g. --timeout 30")
        if not _ALIAS.fullmatch(self.alias):
            raise ConfigError(f"--alias '{self.alias}' is not 1-128 letters, digits, '-' or '_' (and not only digits, "
                              "which Lambda reads as a version)", hint="e.g. --alias live")
        if self.role is not None and not _ROLE.fullmatch(self.role):
            raise ConfigError(f"--role '{self.role}' is not an IAM role ARN",
                              hint="e.g. --role arn:aws:iam::123456789012:role/NAME")
        bad = [key for key in self.env if not _ENV_KEY.fullmatch(key)]
        if bad:
            raise ConfigError(f"--env name(s) {', '.join(repr(key) for key in bad)} are not what Lambda takes (a "
                              "letter, then letters, digits or '_')", hint="e.g. --env LOG_LEVEL=info")

    @property
    def repo(self) -> str:
        return self.repository or self.function.lower().replace("_", "-")


@dataclass(frozen=True, slots=True)
class LambdaResult:
    function: str
    alias: str
    version: str | None
    image_uri: str | None
    architecture: str | None
    journal: dict[str, Any]
    plan: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _tag(resolved: Resolved) -> str:
    """The tag pushed: derived from the digest, so immutable tags never collide and re-deploys reuse it."""
    return f"mlpack-{resolved.image.digest.hex[:16]}"


def _steps(request: LambdaRequest, resolved: Resolved, architecture: str) -> list[Step]:
    tag = _tag(resolved)
    config = []
    if request.memory is not None:
        config.append(f"MemorySize={request.memory}")
    if request.timeout is not None:
        config.append(f"Timeout={request.timeout}")
    if request.env:
        config.append(f"Environment={sorted(request.env)}")
    settings = ", ".join(config)
    registry = request.push_registry or "<account>.dkr.ecr.<region>.amazonaws.com"
    create = (f"ecr.CreateRepository(repositoryName={request.repo}, scanOnPush={request.scan_on_push}, "
              f"imageTagMutability={'IMMUTABLE' if request.immutable_tags else 'MUTABLE'}) if it is missing"
              if request.create_repo else "fail if it is missing (no --create-repo)")
    return [
        Step("repository", f"ecr.DescribeRepositories(repositoryNames=[{request.repo}]); {create}"),
        Step("push", f"ecr.GetAuthorizationToken; push {resolved.image.digest} "
                     f"({len(resolved.image.layers)} layers, missing blobs only) to {registry}/{request.repo}:{tag}"),
        Step("function", f"lambda.GetFunction({request.function}); CreateFunction(PackageType=Image, "
                         f"Architectures=[{architecture}], ImageUri=REPOSITORY_URI@{resolved.image.digest}"
                         f"{', Role=' + request.role if request.role else ''}{', ' + settings if settings else ''}) "
                         f"+ waiter function_active_v2, or UpdateFunctionCode"
                         f"{' + UpdateFunctionConfiguration(' + settings + ')' if settings else ''} "
                         f"+ waiter function_updated_v2"),
        Step("version", f"lambda.PublishVersion({request.function})"),
        Step("alias", f"lambda.GetAlias({request.function}, {request.alias}); CreateAlias or UpdateAlias to the "
                      f"new version"),
    ]


def plan(request: LambdaRequest) -> LambdaResult:
    """The calls `deploy` would make, resolved from the request and the image; makes none."""
    request.check()
    resolved = resolve(request.image, request.platform)
    architecture = aws.lambda_architecture(resolved.image.platform.architecture)
    steps = Journal(_steps(request, resolved, architecture)).plan()
    return LambdaResult(request.function, request.alias, None, None, architecture, {}, steps)


def _ensure_repository(ecr: Any, request: LambdaRequest) -> tuple[dict[str, Any], str]:
    try:
        found = ecr.describe_repositories(repositoryNames=[request.repo])["repositories"][0]
        return found, f"{found['repositoryUri']} exists"
    except ecr.exceptions.RepositoryNotFoundException:
        if not request.create_repo:
            raise DeployError(f"ECR repository '{request.repo}' does not exist (RepositoryNotFoundException)",
                              hint="add --create-repo, or name an existing one with --repository") from None
    made = aws.call("ecr.CreateRepository", ecr.create_repository, repositoryName=request.repo,
                    imageScanningConfiguration={"scanOnPush": request.scan_on_push},
                    imageTagMutability="IMMUTABLE" if request.immutable_tags else "MUTABLE")["repository"]
    return made, f"created {made['repositoryUri']} (scanOnPush={request.scan_on_push}, " \
                 f"{'IMMUTABLE' if request.immutable_tags else 'MUTABLE'} tags)"


def _push(ecr: Any, request: LambdaRequest, repository: dict[str, Any], resolved: Resolved) -> str:
    data = aws.call("ecr.GetAuthorizationToken", ecr.get_authorization_token,
                    registryIds=[repository["registryId"]])["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    host = request.push_registry or repository["repositoryUri"].split("/", 1)[0]
    ref = Reference.parse(f"{host}/{request.repo}:{_tag(resolved)}")
    with RegistryClient(host, scheme=ref.scheme, credentials=Credentials(user, password)) as client:
        pushed = write_outputs(resolved.image, push=ref, client=client).pushed
    assert pushed is not None
    counts: dict[str, int] = {}
    for _, state in pushed.blobs:
        counts[state] = counts.get(state, 0) + 1
    return f"{pushed.reference} ({', '.join(f'{n} {s}' for s, n in sorted(counts.items()))})"


def _function(lam: Any, request: LambdaRequest, image_uri: str, architecture: str) -> str:
    settings: dict[str, Any] = {}
    if request.memory is not None:
        settings["MemorySize"] = request.memory
    if request.timeout is not None:
        settings["Timeout"] = request.timeout
    if request.env:
        settings["Environment"] = {"Variables": dict(request.env)}
    try:
        lam.get_function(FunctionName=request.function)
        exists = True
    except lam.exceptions.ResourceNotFoundException:
        exists = False
    if not exists:
        if not request.role:
            raise DeployError(f"function '{request.function}' does not exist and creating it needs an execution role",
                              hint="pass --role arn:aws:iam::ACCOUNT:role/NAME")
        aws.call("lambda.CreateFunction", lam.create_function, FunctionName=request.function, Role=request.role,
                 PackageType="Image", Code={"ImageUri": image_uri}, Architectures=[architecture], Publish=False,
                 **settings)
        aws.wait("waiting for the function to become Active", lam.get_waiter("function_active_v2"),
                 FunctionName=request.function)
        return f"created {request.function} ({architecture}, {image_uri})"
    # An update still in progress (an earlier deploy) makes UpdateFunctionCode fail with ResourceConflictException.
    aws.wait("waiting for an earlier update to finish", lam.get_waiter("function_updated_v2"),
             FunctionName=request.function)
    aws.call("lambda.UpdateFunctionCode", lam.update_function_code, FunctionName=request.function,
             ImageUri=image_uri, Architectures=[architecture])
    aws.wait("waiting for the code update", lam.get_waiter("function_updated_v2"), FunctionName=request.function)
    if settings or request.role:
        extra = {"Role": request.role} if request.role else {}
        aws.call("lambda.UpdateFunctionConfiguration", lam.update_function_configuration,
                 FunctionName=request.function, **settings, **extra)
        aws.wait("waiting for the configuration update", lam.get_waiter("function_updated_v2"),
                 FunctionName=request.function)
    return f"updated {request.function} ({architecture}, {image_uri})"


def point_alias(lam: Any, function: str, alias: str, version: str) -> str:
    """Create `alias` at `version`, or move it there; returns what it did."""
    try:
        current = lam.get_alias(FunctionName=function, Name=alias)["FunctionVersion"]
    except lam.exceptions.ResourceNotFoundException:
        aws.call("lambda.CreateAlias", lam.create_alias, FunctionName=function, Name=alias, FunctionVersion=version)
        return f"created {alias} -> {version}"
    aws.call("lambda.UpdateAlias", lam.update_alias, FunctionName=function, Name=alias, FunctionVersion=version)
    return f"moved {alias} {current} -> {version}"


def deploy(request: LambdaRequest) -> LambdaResult:
    """Run the deployment (module docstring); a DeployError half-way says what was and was not done."""
    request.check()
    resolved = resolve(request.image, request.platform)
    architecture = aws.lambda_architecture(resolved.image.platform.architecture)
    journal = Journal(_steps(request, resolved, architecture))
    sess = aws.session(request.aws)
    ecr = aws.client(sess, "ecr", request.aws)
    lam = aws.client(sess, "lambda", request.aws)
    with journal.step("repository") as out:
        repository, out["did"] = _call_checked("ecr.DescribeRepositories", _ensure_repository, ecr, request)
    image_uri = f"{repository['repositoryUri']}@{resolved.image.digest}"
    with journal.step("push") as out:
        out["did"] = _push(ecr, request, repository, resolved)
    with journal.step("function") as out:
        out["did"] = _call_checked("lambda.GetFunction", _function, lam, request, image_uri, architecture)
    with journal.step("version") as out:
        version = aws.call("lambda.PublishVersion", lam.publish_version, FunctionName=request.function,
                           Description=f"mlpack {resolved.image.digest}")["Version"]
        out["did"] = f"published {version}"
    with journal.step("alias") as out:
        out["did"] = _call_checked("lambda.GetAlias", point_alias, lam, request.function, request.alias, version)
    return LambdaResult(request.function, request.alias, version, image_uri, architecture, journal.to_dict(),
                        journal.plan())


def _rollback_steps(function: str, alias: str) -> list[Step]:
    return [Step("alias", f"lambda.GetAlias({function}, {alias}); ListVersionsByFunction({function}); "
                          f"UpdateAlias({alias}) to the highest version below the current one")]


def rollback_plan(function: str, alias: str) -> LambdaResult:
    """The calls `rollback` would make; makes none."""
    return LambdaResult(function, alias, None, None, None, {}, Journal(_rollback_steps(function, alias)).plan())


def rollback(function: str, alias: str, settings: aws.Settings) -> LambdaResult:
    """Move `alias` to the highest published version below the one it points at."""
    journal = Journal(_rollback_steps(function, alias))
    sess = aws.session(settings)
    lam = aws.client(sess, "lambda", settings)
    with journal.step("alias") as out:
        current = aws.call("lambda.GetAlias", lam.get_alias, FunctionName=function, Name=alias)["FunctionVersion"]
        versions: list[int] = []
        pages = lam.get_paginator("list_versions_by_function").paginate(FunctionName=function)
        for page in aws.call("lambda.ListVersionsByFunction", lambda: list(pages)):
            versions += [int(v["Version"]) for v in page["Versions"] if v["Version"].isdigit()]
        if not current.isdigit():
            raise DeployError(f"alias {alias} points at {current}, not a published version", hint="deploy first")
        older = [v for v in versions if v < int(current)]
        if not older:
            raise DeployError(f"alias {alias} points at version {current} and there is no earlier version",
                              hint="nothing to roll back to")
        target = str(max(older))
        aws.call("lambda.UpdateAlias", lam.update_alias, FunctionName=function, Name=alias, FunctionVersion=target)
        out["did"] = f"moved {alias} {current} -> {target}"
    return LambdaResult(function, alias, target, None, None, journal.to_dict(), journal.plan())


def _call_checked(what: str, fn: Any, *args: Any) -> Any:
    """fn(*args) where fn makes several AWS calls itself: errors that escape it are translated too."""
    with aws.translating(what):
        return fn(*args)
