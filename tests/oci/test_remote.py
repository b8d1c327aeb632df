"""Pushing and pulling against a real registry: only changed blobs go up, chunked uploads, retries and resumed
uploads after dropped connections, and the auth flows (bearer token, basic, Docker config and helpers, ECR)."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mlpk.packager.errors import RegistryError
from mlpk.packager.oci import Entry, Image, append_layers, empty_image, image_from_registry, layer_from_entries
from mlpk.packager.oci import remote
from mlpk.packager.oci.auth import Credentials, credentials_for, from_docker_config, from_ecr
from mlpk.packager.oci.client import RegistryClient
from mlpk.packager.oci.validate import validate
from tests.oci import proxy
from tests.oci.images import app_image, check

pytestmark = pytest.mark.registry


def _uploads(lines: list[str]) -> dict[str, int]:
    kinds = {"blob PUT": 0, "blob POST": 0, "blob PATCH": 0, "manifest PUT": 0}
    for line in lines:
        method, path = line.split(" ", 1)
        if "/blobs/uploads/" in path and method in ("PUT", "POST", "PATCH"):
            kinds[f"blob {method}"] += 1
        elif "/manifests/" in path and method == "PUT":
            kinds["manifest PUT"] += 1
    return kinds


def test_changing_only_the_top_layer_uploads_one_layer_config_and_manifest(
        fresh_registry, busybox_base: Callable[[str], Image]) -> None:
    ref = f"{fresh_registry.host}/apps/model:1"
    first = app_image(busybox_base("amd64"), top=b"model v1\n")
    remote.push(first, ref)
    before = len(fresh_registry.requests())
    assert _uploads(fresh_registry.requests()) == {"blob PUT": 5, "blob POST": 5, "blob PATCH": 0,
                                                   "manifest PUT": 1}
    second = app_image(busybox_base("amd64"), top=b"model v2\n")
    assert [l.digest for l in second.layers[:3]] == [l.digest for l in first.layers[:3]]
    report = remote.push(second, f"{fresh_registry.host}/apps/model:2")
    after = fresh_registry.requests()[before:]
    assert _uploads(after) == {"blob PUT": 2, "blob POST": 2, "blob PATCH": 0, "manifest PUT": 1}, after
    assert sorted(s for _, s in report.blobs) == ["exists"] * 3 + ["uploaded"] * 2
    check(image_from_registry(f"{fresh_registry.host}/apps/model:2"),
          f"docker://{fresh_registry.host}/apps/model:2", "--tls-verify=false")


def _big_image(size: int = 1 << 20) -> Image:
    return append_layers(empty_image(), layer_from_entries([Entry("/blob", data=os.urandom(size))]))


def test_chunked_upload(fresh_registry) -> None:
    img = _big_image()
    ref = f"{fresh_registry.host}/big/image:1"
    with RegistryClient(fresh_registry.host, scheme="http", chunk_size=256 << 10) as client:
        remote.push(img, ref, client=client)
    kinds = _uploads(fresh_registry.requests())
    assert kinds["blob PATCH"] == 5  # 1 MiB of random data compresses to a bit over 1 MiB: 5 chunks of 256 KiB
    check(image_from_registry(ref), f"docker://{ref}", "--tls-verify=false")


@pytest.fixture
def front(fresh_registry) -> Iterator[proxy.Front]:
    state = proxy.Front(fresh_registry.host)
    server = proxy.start(state)
    yield state
    server.shutdown()


def test_retries_after_503_and_dropped_connections(front: proxy.Front) -> None:
    img = _big_image(300_000)
    front.faults = [proxy.Fault("HEAD", "/blobs/", "503"), proxy.Fault("POST", "/blobs/uploads/", "drop"),
                    proxy.Fault("PUT", "/blobs/uploads/", "drop"), proxy.Fault("PUT", "/manifests/", "503")]
    ref = f"{front.host}/retry/image:1"
    with RegistryClient(front.host, scheme="http", backoff_s=0.01) as client:
        remote.push(img, ref, client=client)
    assert all(f.fired for f in front.faults)
    check(image_from_registry(ref), f"docker://{ref}", "--tls-verify=false")


@pytest.mark.parametrize(("action", "patches", "sessions"), [("drop", 6, 2), ("lose-answer", 8, 3)])
def test_a_chunked_upload_resumes_at_the_registrys_offset(front: proxy.Front, action: str, patches: int,
                                                          sessions: int) -> None:
    """The connection drops at the 3rd chunk: the client asks the registry where the upload stands (GET on the
    upload URL) and continues from its offset (5 chunks + the one dropped). When the registry did take the chunk
    but the answer was lost, Debian's registry refuses the stale upload state, and the client starts a new
    session (5 + 3 chunks). The config blob adds one upload session (POST) to each."""
    img = _big_image()
    front.faults = [proxy.Fault("PATCH", "/blobs/uploads/", action, nth=3)]
    ref = f"{front.host}/resume/image:1"
    with RegistryClient(front.host, scheme="http", chunk_size=256 << 10, backoff_s=0.01) as client:
        remote.push(img, ref, client=client)
    assert sum(1 for line in front.log if line.startswith("PATCH")) == patches, front.log
    assert sum(1 for line in front.log if line.startswith("POST")) == sessions, front.log
    assert sum(1 for line in front.log if line.startswith("GET") and "/blobs/uploads/" in line) == 1
    check(image_from_registry(ref), f"docker://{ref}", "--tls-verify=false")


def test_gives_up_with_a_clear_error(front: proxy.Front) -> None:
    front.faults = [proxy.Fault("GET", "/manifests/", "503", nth=1) for _ in range(3)]
    with RegistryClient(front.host, scheme="http", retries=2, backoff_s=0.01) as client, \
            pytest.raises(RegistryError, match=r"GET .*/manifests/1 failed after 3 attempts: HTTP 503"):
        remote.read(f"{front.host}/none/image:1", client=client)


def test_bearer_token_flow(front: proxy.Front) -> None:
    front.mode = "bearer"
    img = _big_image(10_000)
    ref = f"{front.host}/private/image:1"
    with RegistryClient(front.host, scheme="http", credentials=Credentials("alice", "s3cret")) as client:
        remote.push(img, ref, client=client)
        pulled = image_from_registry(ref, client=client)
        assert pulled.digest == img.digest
        validate(pulled)
    assert any("repository:private/image:pull,push" in scopes for scopes in front.token_scopes)
    with RegistryClient(front.host, scheme="http", credentials=Credentials("alice", "wrong")) as client, \
            pytest.raises(RegistryError, match="token service .* answered 401"):
        remote.read(ref, client=client)


def test_basic_auth_from_docker_config_and_credential_helper(front: proxy.Front, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    front.mode = "basic"
    config = tmp_path / "docker"
    config.mkdir()
    auth = base64.b64encode(b"alice:s3cret").decode()
    (config / "config.json").write_text(json.dumps({"auths": {front.host: {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    img = _big_image(10_000)
    remote.push(img, f"{front.host}/basic/image:1")
    assert credentials_for(front.host) == Credentials("alice", "s3cret")
    # a credential helper: a real executable on PATH speaking the docker-credential protocol
    bindir = tmp_path / "bin"
    bindir.mkdir()
    helper = bindir / "docker-credential-mlpacktest"
    helper.write_text('#!/bin/sh\nread host\n[ "$1" = get ] && echo "{\\"Username\\":\\"alice\\",'
                      '\\"Secret\\":\\"s3cret\\",\\"ServerURL\\":\\"$host\\"}"\n')
    helper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bindir}:{os.environ['PATH']}")
    (config / "config.json").write_text(json.dumps({"credHelpers": {front.host: "mlpacktest"}}))
    assert from_docker_config(front.host) == Credentials("alice", "s3cret")
    pulled = image_from_registry(f"{front.host}/basic/image:1")
    assert pulled.digest == img.digest
    validate(pulled)
    (config / "config.json").write_text(json.dumps({}))
    with pytest.raises(RegistryError, match=r"refused \(401\)"):
        remote.read(f"{front.host}/basic/image:1")


@pytest.mark.moto
def test_ecr_credentials_through_boto3(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    creds = from_ecr("123456789012.dkr.ecr.eu-west-1.amazonaws.com")
    assert creds is not None and creds.username == "AWS" and creds.password
    assert from_ecr("registry.example.com") is None
