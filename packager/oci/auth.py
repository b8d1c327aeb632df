"""Registry credentials and the distribution auth flows.

Where credentials come from, in order: ECR hosts (`*.dkr.ecr.*.amazonaws.com`) get a token from boto3's
`get_authorization_token`; otherwise Docker's config.json ($DOCKER_CONFIG or ~/.docker): `credHelpers[host]`,
then `auths[host]` (base64 `auth`, username/password or `identitytoken`), then `credsStore`. Without any, requests
go anonymous. `RegistryAuth` answers a 401 challenge: Basic gets the credentials, Bearer (the token flow of the
distribution spec, "Token Authentication Specification") fetches a token from the realm, sending the credentials
when there are some, for every scope asked so far.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path

import httpx

from mlpk.packager.errors import RegistryError, missing_extra

_ECR = re.compile(r"^(\d+)\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")
_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass(frozen=True, slots=True)
class Credentials:
    """A username and password (or secret), or an identity token used as an OAuth2 refresh token."""

    username: str = ""
    password: str = ""
    identity_token: str = ""

    def basic(self) -> str:
        return "Basic " + base64.b64encode(f"{self.username}:{self.password}".encode()).decode()


def docker_config_path() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker") / "config.json"


def _helper(name: str, host: str) -> Credentials | None:
    exe = shutil.which(f"docker-credential-{name}")
    if exe is None:
        raise RegistryError(f"Docker config names credential helper '{name}' for {host}, but "
                            f"docker-credential-{name} is not on PATH", hint="install the helper or edit config.json")
    done = subprocess.run([exe, "get"], input=host, capture_output=True, text=True, timeout=60, check=False)
    if done.returncode != 0:
        if "credentials not found" in (done.stdout + done.stderr).lower():
            return None
        raise RegistryError(f"credential helper docker-credential-{name} failed for {host}: "
                            f"{(done.stderr or done.stdout).strip()[:200]}", hint=f"docker login {host}")
    data = json.loads(done.stdout)
    if data.get("Username") == "<token>":
        return Credentials(identity_token=data.get("Secret", ""))
    return Credentials(data.get("Username", ""), data.get("Secret", ""))


def _host_keys(host: str) -> list[str]:
    keys = [host, f"https://{host}", f"http://{host}", f"https://{host}/v1/", f"https://{host}/v2/"]
    if host == "registry-1.docker.io":
        keys += ["https://index.docker.io/v1/", "index.docker.io", "docker.io"]
    return keys


def from_docker_config(host: str, path: Path | None = None) -> Credentials | None:
    """Credentials for `host` from Docker's config.json (helpers included), or None."""
    config_path = path or docker_config_path()
    try:
        config = json.loads(config_path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, json.JSONDecodeError) as err:
        raise RegistryError(f"cannot read Docker config '{config_path}': {err}", hint="fix or remove the file") \
            from err
    helpers = config.get("credHelpers") or {}
    for key in _host_keys(host):
        if key in helpers:
            return _helper(helpers[key], host)
    auths = config.get("auths") or {}
    for key in _host_keys(host):
        entry = auths.get(key)
        if not entry:
            continue
        if entry.get("identitytoken"):
            return Credentials(identity_token=entry["identitytoken"])
        if entry.get("auth"):
            user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            return Credentials(user, password)
        if entry.get("username"):
            return Credentials(entry["username"], entry.get("password", ""))
    if config.get("credsStore"):
        return _helper(config["credsStore"], host)
    return None


def from_ecr(host: str) -> Credentials | None:
    """An ECR authorization token for `host` through boto3 (None when `host` is not ECR)."""
    match = _ECR.match(host)
    if match is None:
        return None
    try:
        import boto3
        import botocore.exceptions
    except ImportError as err:
        raise missing_extra("boto3", "ecr", f"pushing to ECR ({host})") from err
    account, region = match.groups()
    try:
        data = boto3.client("ecr", region_name=region).get_authorization_token(registryIds=[account])
    except (botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as err:
        raise RegistryError(f"ECR refused an authorization token for {host}: {err}",
                            hint="check AWS credentials (aws sts get-caller-identity) and ecr:GetAuthorizationToken") \
            from err
    token = data["authorizationData"][0]["authorizationToken"]
    user, _, password = base64.b64decode(token).decode().partition(":")
    return Credentials(user, password)


def credentials_for(host: str) -> Credentials | None:
    """The credentials mlpack uses for `host` (see the module docstring for the order)."""
    return from_ecr(host) or from_docker_config(host)


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    scheme, _, rest = header.partition(" ")
    return scheme.lower(), dict(_PARAM.findall(rest))


class RegistryAuth(httpx.Auth):
    """An httpx auth flow for registries: Basic and Bearer challenges, tokens reused across requests."""

    def __init__(self, credentials: Credentials | None) -> None:
        self.credentials = credentials
        self.header: str | None = None
        self.scopes: list[str] = []

    def add_scope(self, scope: str) -> None:
        if scope not in self.scopes:
            self.scopes.append(scope)

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        if self.header:
            request.headers["Authorization"] = self.header
        response = yield request
        if response.status_code != 401:
            return
        scheme, params = parse_challenge(response.headers.get("WWW-Authenticate", ""))
        if scheme == "basic":
            if self.credentials is None or self.credentials.identity_token:
                return
            self.header = self.credentials.basic()
        elif scheme == "bearer" and params.get("realm"):
            for scope in params.get("scope", "").split(" "):
                if scope:
                    self.add_scope(scope)
            token = yield self._token_request(params)
            if token.status_code != 200:
                token.read()
                raise RegistryError(f"the token service {params['realm']} answered {token.status_code} for scopes "
                                    f"{' '.join(self.scopes)}",
                                    hint=f"check credentials for {request.url.host} (docker login)")
            token.read()
            body = token.json()
            self.header = f"Bearer {body.get('token') or body.get('access_token')}"
        else:
            return
        request.headers["Authorization"] = self.header
        yield request

    def _token_request(self, params: dict[str, str]) -> httpx.Request:
        query: list[tuple[str, str | int | float | bool | None]] = [("service", params.get("service", ""))]
        query += [("scope", scope) for scope in self.scopes]
        headers = {}
        creds = self.credentials
        if creds and creds.identity_token:
            form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                    "service": params.get("service", ""), "scope": " ".join(self.scopes), "client_id": "mlpack"}
            return httpx.Request("POST", params["realm"], data=form)
        if creds:
            headers["Authorization"] = creds.basic()
        return httpx.Request("GET", params["realm"], params=query, headers=headers)
