"""Fixtures of the delivery tests: a moto server whose access log counts the AWS calls made, and the image
exports the tests deliver."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import _stop, free_port, require, wait_http


@dataclass(frozen=True, slots=True)
class Moto:
    """A moto server on loopback and its log (werkzeug writes one line per request)."""

    url: str
    log: Path

    def requests(self) -> list[str]:
        """'METHOD PATH' for every request served so far (the moto-api calls of the fixture excluded)."""
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            if '"' in line and " HTTP/" in line:
                request = line.split('"')[1].rsplit(" ", 1)[0]
                if "/moto-api/" not in request:
                    out.append(request)
        return out


def start_moto(tmp: Path, **env: str) -> tuple[Moto, subprocess.Popen[bytes]]:
    import os

    port = free_port()
    log = tmp / "moto.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([shutil.which("moto_server") or "moto_server", "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env})
    url = f"http://127.0.0.1:{port}"
    wait_http(url + "/moto-api/", proc=proc)
    return Moto(url, log), proc


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """A moto server of this module's own (ECR, Lambda and IAM management calls), with a readable log."""
    require("moto")
    server, proc = start_moto(tmp_path_factory.mktemp("moto"))
    yield server
    _stop(proc)


@pytest.fixture(scope="module")
def moto_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """A moto server that checks access keys (INITIAL_NO_AUTH_ACTION_COUNT=0): unknown keys are refused as AWS
    refuses them (InvalidClientTokenId)."""
    require("moto")
    server, proc = start_moto(tmp_path_factory.mktemp("moto-auth"), INITIAL_NO_AUTH_ACTION_COUNT="0")
    yield server
    _stop(proc)
