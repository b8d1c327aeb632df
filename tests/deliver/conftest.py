"""Fixtures of the delivery tests: a moto server whose access log counts the AWS calls made, and an SSH server
(the image export they deliver, `exported_cpu`, is shared with other suites in tests/conftest.py)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlpk.packager import probes
from tests.conftest import free_port, require, stop_process, wait_http


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
        proc = subprocess.Popen([probes.moto_server().detail, "-H", "127.0.0.1", "-p", str(port)],
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
    stop_process(proc)


@pytest.fixture(scope="module")
def moto_with_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Moto]:
    """A moto server that checks access keys (INITIAL_NO_AUTH_ACTION_COUNT=0): unknown keys are refused as AWS
    refuses them (InvalidClientTokenId)."""
    require("moto")
    server, proc = start_moto(tmp_path_factory.mktemp("moto-auth"), INITIAL_NO_AUTH_ACTION_COUNT="0")
    yield server
    stop_process(proc)


@dataclass(frozen=True, slots=True)
class Sshd:
    """A real OpenSSH server on loopback that lets root in with `identity`; `known_hosts` holds its host key."""

    port: int
    identity: Path
    known_hosts: Path

    @property
    def url(self) -> str:
        return f"ssh://root@127.0.0.1:{self.port}"

    def args(self) -> tuple[str, ...]:
        return ("--identity", str(self.identity), "--known-hosts", str(self.known_hosts))


def _keygen(path: Path) -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True,
                   capture_output=True)


def start_sshd(tmp: Path, *, host_key: Path | None = None, client_key: Path | None = None, extra: str = "",
               death_signal: int = 9) -> tuple[Sshd, subprocess.Popen[bytes]]:
    """`sshd -D` on a free loopback port letting root in with `client_key` (made when not given), with `host_key`
    (made when not given) and `extra` sshd_config lines; started guarded, so it dies with this process."""
    from mlpk.packager import processes

    tmp.mkdir(parents=True, exist_ok=True)
    if host_key is None:
        host_key = tmp / "host_key"
        _keygen(host_key)
    if client_key is None:
        client_key = tmp / "client_key"
        _keygen(client_key)
    (tmp / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    (tmp / "authorized_keys").chmod(0o600)
    port = free_port()
    config = tmp / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {host_key}\nPidFile {tmp / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {tmp / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"LogLevel ERROR\n{extra}")
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege separation directory
    log = tmp / "sshd.log"
    with log.open("wb") as out:
        proc = processes.popen([shutil.which("sshd") or "/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
                               stdout=out, stderr=subprocess.STDOUT, death_signal=death_signal)
    import socket
    import time

    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_process(proc)
                raise RuntimeError(f"sshd did not start: {log.read_text()}") from None
            time.sleep(0.1)
    key = Path(f"{host_key}.pub").read_text().split()
    (tmp / "known_hosts").write_text(f"[127.0.0.1]:{port} {key[0]} {key[1]}\n")
    return Sshd(port, client_key, tmp / "known_hosts"), proc


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sshd]:
    """`sshd -D` with a temporary host key and an authorized key for root, on a free loopback port."""
    require("sshd")
    server, proc = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    stop_process(proc)
