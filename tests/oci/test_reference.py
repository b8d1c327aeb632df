"""Reference parsing and where credentials come from (no network: pure parsing and a config file)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from mlpk.packager.errors import ConfigError, RegistryError
from mlpk.packager.oci.auth import Credentials, from_docker_config, parse_challenge
from mlpk.packager.oci.reference import Reference

D = "sha256:" + "ab" * 32


@pytest.mark.parametrize(("text", "registry", "repo", "ident", "scheme"), [
    ("127.0.0.1:5000/apps/model:1", "127.0.0.1:5000", "apps/model", "1", "http"),
    ("localhost/m", "localhost", "m", "latest", "http"),
    ("busybox", "registry-1.docker.io", "library/busybox", "latest", "https"),
    ("ghcr.io/org/img:v1.2" + "@" + D, "ghcr.io", "org/img", D, "https"),
    ("123456789012.dkr.ecr.eu-west-1.amazonaws.com/m:x", "123456789012.dkr.ecr.eu-west-1.amazonaws.com", "m", "x",
     "https"),
])
def test_reference_parsing(text: str, registry: str, repo: str, ident: str, scheme: str) -> None:
    ref = Reference.parse(text)
    assert (ref.registry, ref.repository, ref.identifier, ref.scheme) == (registry, repo, ident, scheme)


def test_bad_references_name_the_text() -> None:
    with pytest.raises(ConfigError, match="'Host/UPPER:1' is not valid"):
        Reference.parse("Host/UPPER:1")
    with pytest.raises(ConfigError, match="is not valid"):
        Reference.parse("reg.io/a:b:c")


def test_insecure_registries_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLPACK_INSECURE_REGISTRIES", "reg.lan:5000")
    assert Reference.parse("reg.lan:5000/a").scheme == "http"
    assert Reference.parse("other.lan:5000/a").scheme == "https"


def test_docker_config_forms(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    auth = base64.b64encode(b"bob:pw:with:colons").decode()
    path.write_text(json.dumps({"auths": {"https://reg.io": {"auth": auth},
                                          "tok.io": {"identitytoken": "refresh"},
                                          "https://index.docker.io/v1/": {"username": "u", "password": "p"}}}))
    assert from_docker_config("reg.io", path) == Credentials("bob", "pw:with:colons")
    assert from_docker_config("tok.io", path) == Credentials(identity_token="refresh")
    assert from_docker_config("registry-1.docker.io", path) == Credentials("u", "p")
    assert from_docker_config("none.io", path) is None
    path.write_text(json.dumps({"credsStore": "not-installed-helper"}))
    with pytest.raises(RegistryError, match="docker-credential-not-installed-helper is not on PATH"):
        from_docker_config("reg.io", path)
    path.write_text("{not json")
    with pytest.raises(RegistryError, match="cannot read Docker config"):
        from_docker_config("reg.io", path)


def test_challenge_parsing() -> None:
    scheme, params = parse_challenge('Bearer realm="https://auth.io/token",service="reg.io",scope="repository:a:pull"')
    assert scheme == "bearer"
    assert params == {"realm": "https://auth.io/token", "service": "reg.io", "scope": "repository:a:pull"}
