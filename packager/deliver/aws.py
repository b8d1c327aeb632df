"""boto3 for delivery: clients from the standard credential chain and region resolution (environment, shared
config and credentials files, SSO, instance roles; AWS_PROFILE/--profile, AWS_REGION/--region), an endpoint
override for local emulators, and AWS errors turned into one-line DeployErrors that carry the remote error code."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from mlpk.packager.errors import ConfigError, DeployError, missing_extra

T = TypeVar("T")
_XML_CODE = re.compile(r"<Code>([^<]+)</Code>")
_XML_MESSAGE = re.compile(r"<Message>([^<]+)</Message>")

# Remote error codes -> what to do about them.
HINTS: dict[str, str] = {
    "InvalidClientTokenId": "the access key is not valid: check AWS credentials (aws sts get-caller-identity)",
    "UnrecognizedClientException": "the access key is not valid: check AWS credentials (aws sts get-caller-identity)",
    "SignatureDoesNotMatch": "the secret key does not match the access key: check AWS credentials",
    "ExpiredTokenException": "the session token has expired: refresh it (aws sso login, or new STS credentials)",
    "ExpiredToken": "the session token has expired: refresh it (aws sso login, or new STS credentials)",
    "AccessDeniedException": "the identity lacks the permission named above: grant it in IAM",
    "AccessDenied": "the identity lacks the permission named above: grant it in IAM",
    "RepositoryNotFoundException": "create it with --create-repo, or name an existing one with --repository",
    "ResourceNotFoundException": "check the function name and region (--region)",
    "InvalidParameterValueException": "check --role: it must be an IAM role that lambda.amazonaws.com can assume",
    "ResourceConflictException": "another update is in progress: wait and run the command again",
    "TooManyRequestsException": "AWS throttled the calls: wait and run the command again",
}


@dataclass(frozen=True, slots=True)
class Settings:
    """Where AWS calls go: all None means boto3's own resolution."""

    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None


def session(settings: Settings) -> Any:
    """A boto3 Session; ToolchainError when boto3 is missing, DeployError when no region resolves."""
    try:
        import boto3
        import botocore.exceptions
    except ImportError as err:
        raise missing_extra("boto3", "ecr", "deploying to AWS Lambda") from err
    try:
        sess = boto3.Session(profile_name=settings.profile, region_name=settings.region)
    except botocore.exceptions.ProfileNotFound as err:
        raise DeployError(f"AWS profile '{settings.profile}' is not configured",
                          hint="aws configure --profile NAME, or drop --profile") from err
    if not sess.region_name:
        raise DeployError("no AWS region is configured", hint="pass --region, or set AWS_REGION")
    return sess


def client(sess: Any, service: str, settings: Settings) -> Any:
    import botocore.config

    config = botocore.config.Config(retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=10,
                                    read_timeout=60)
    return sess.client(service, endpoint_url=settings.endpoint_url, config=config)


def error_code(err: Exception) -> tuple[str, str]:
    """(code, message) of a botocore ClientError; emulators sometimes wrap the real code in an XML body."""
    info = getattr(err, "response", {}).get("Error", {})
    code, message = str(info.get("Code", "")), str(info.get("Message", ""))
    if "<Code>" in message:
        found, text = _XML_CODE.search(message), _XML_MESSAGE.search(message)
        code = found.group(1) if found else code
        message = text.group(1) if text else message
    return code or "Unknown", " ".join(message.split())


@contextmanager
def translating(what: str) -> Iterator[None]:
    """AWS errors raised inside become DeployErrors that name `what`, the remote code and a fix."""
    import botocore.exceptions

    try:
        yield
    except botocore.exceptions.ClientError as err:
        code, message = error_code(err)
        status = err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "?")
        raise DeployError(f"{what} was refused: {code} (HTTP {status}): {message}",
                          hint=HINTS.get(code, "see the AWS error code above")) from err
    except botocore.exceptions.NoCredentialsError as err:
        raise DeployError(f"{what}: no AWS credentials were found",
                          hint="set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or aws configure") \
            from err
    except botocore.exceptions.EndpointConnectionError as err:
        raise DeployError(f"{what}: the endpoint {err.kwargs.get('endpoint_url', '?')} did not answer "
                          f"(EndpointConnectionError)", hint="check the network, --region and --endpoint-url") \
            from err
    except botocore.exceptions.WaiterError as err:
        last = (err.last_response or {}).get("Configuration") or err.last_response or {}
        raise DeployError(f"{what}: waiting failed ({err.name}): {err.reason}; last state: "
                          f"{last.get('State', '?')} {last.get('StateReason', '')}".rstrip(),
                          hint="see the function's StateReason (aws lambda get-function)") from err
    except botocore.exceptions.BotoCoreError as err:
        raise DeployError(f"{what} failed: {type(err).__name__}: {err}", hint="check the AWS settings") from err


def call(what: str, fn: Callable[..., T], **kwargs: Any) -> T:
    """fn(**kwargs), with AWS errors translated (see `translating`)."""
    with translating(what):
        return fn(**kwargs)


def wait(what: str, waiter: Any, **kwargs: Any) -> None:
    """Run a boto3 waiter (its own delays and attempts, from the service model) through `call`."""
    call(what, waiter.wait, **kwargs)


def lambda_architecture(architecture: str) -> str:
    """Lambda's name for an image architecture (Lambda runs x86_64 and arm64 only)."""
    names = {"amd64": "x86_64", "arm64": "arm64"}
    if architecture not in names:
        raise ConfigError(f"Lambda runs x86_64 and arm64 images, not {architecture}",
                             hint="export with --target lambda or lambda-arm64")
    return names[architecture]
