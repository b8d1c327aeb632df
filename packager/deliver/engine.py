"""A Docker engine to deliver to: the local one, or one behind SSH (the `docker` CLI run on the device).

Both run `docker …` commands and can stream a file into one (for `docker load`), counting the bytes they send.
The SSH side uses paramiko: the device's known host key is required (system known_hosts, or --known-hosts),
keys come from --identity, the SSH agent or ~/.ssh, and nothing but `docker` is needed on the device.
"""

from __future__ import annotations

import errno
import getpass
import os
import shlex
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol
from urllib.parse import urlsplit

from mlpk.packager.errors import ConfigError, DeployError, missing_extra
from mlpk.packager.oci.digest import CHUNK


@dataclass(frozen=True, slots=True)
class Done:
    """A finished command: exit status, output, and the bytes sent on its standard input."""

    code: int
    out: str
    err: str
    sent: int = 0


class Engine(Protocol):
    """Where `docker` commands run."""

    name: str

    def docker(self, *args: str, stdin: BinaryIO | None = None, timeout: float = 600) -> Done: ...

    def close(self) -> None: ...


def _pump(src: BinaryIO, write: object) -> int:
    sent = 0
    while chunk := src.read(CHUNK):
        write(chunk)  # type: ignore[operator]
        sent += len(chunk)
    return sent


class LocalEngine:
    """The engine the local `docker` CLI talks to."""

    name = "local engine"

    def __init__(self, docker: str = "docker") -> None:
        self.command = shlex.split(docker)

    def docker(self, *args: str, stdin: BinaryIO | None = None, timeout: float = 600) -> Done:
        """`stdin` must be a file on disk (it is handed to the process as is)."""
        sent = 0
        if stdin is not None:
            sent = os.fstat(stdin.fileno()).st_size - stdin.tell()
        try:
            done = subprocess.run([*self.command, *args], stdin=stdin if stdin else subprocess.DEVNULL,
                                  capture_output=True, timeout=timeout, check=False)
        except FileNotFoundError as err:
            raise DeployError(f"'{self.command[0]}' is not installed here", hint="install the Docker CLI") from err
        return Done(done.returncode, done.stdout.decode(errors="replace"), done.stderr.decode(errors="replace"), sent)

    def close(self) -> None:
        pass


@dataclass(frozen=True, slots=True)
class SshTarget:
    """ssh://[user@]host[:port]"""

    user: str
    host: str
    port: int

    @classmethod
    def parse(cls, url: str) -> SshTarget:
        parts = urlsplit(url)
        try:
            port = parts.port or 22
        except ValueError as err:
            raise ConfigError(f"device '{url}' has a bad port", hint="ssh://user@host[:port]") from err
        if parts.scheme != "ssh" or not parts.hostname:
            raise ConfigError(f"device '{url}' is not an ssh:// URL", hint="ssh://user@host[:port]")

        return cls(parts.username or getpass.getuser(), parts.hostname, port)

    def __str__(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"


class SshEngine:
    """The engine of a device reached over SSH."""

    def __init__(self, target: SshTarget, *, identity: Path | None = None, known_hosts: Path | None = None,
                 docker: str = "docker", connect_timeout: float = 15) -> None:
        try:
            import paramiko
        except ImportError as err:
            raise missing_extra("paramiko", "device", "delivering to a device over SSH") from err
        self.name = str(target)
        self.command = docker
        self.client = paramiko.SSHClient()
        self.client.load_system_host_keys()
        if known_hosts is not None:
            self.client.load_host_keys(str(known_hosts))
        self.client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            self.client.connect(target.host, port=target.port, username=target.user,
                                key_filename=str(identity) if identity else None, timeout=connect_timeout,
                                banner_timeout=connect_timeout, auth_timeout=connect_timeout)
        except paramiko.AuthenticationException as err:
            raise DeployError(f"{target} refused the SSH login (AuthenticationException: {err})",
                              hint="give the device's key (--identity, or identity under [fleet] in a fleet "
                                   "file), or load it into ssh-agent") from err
        except paramiko.BadHostKeyException as err:
            raise DeployError(f"{target} presented a host key that differs from the known one (BadHostKeyException)",
                              hint="verify the device, then fix its line in known_hosts") from err
        except paramiko.SSHException as err:
            code = "UnknownHostKey" if "known_hosts" in str(err) else type(err).__name__
            raise DeployError(f"{target}: SSH failed ({code}: {err})",
                              hint="add the device's host key with ssh-keyscan to known_hosts, or name the file "
                                   "that has it (--known-hosts, or known_hosts under [fleet] in a fleet file)")\
                from err
        except (TimeoutError, OSError) as err:
            raise DeployError(f"{target} is unreachable ({_socket_error(err)})",
                              hint="check the address, the port and that sshd runs on the device") from err

    def docker(self, *args: str, stdin: BinaryIO | None = None, timeout: float = 600) -> Done:
        import paramiko

        command = f"{self.command} {shlex.join(args)}"
        try:
            channel = self.client.get_transport().open_session(timeout=30)
            channel.settimeout(timeout)
            channel.exec_command(command)
            sent = 0
            if stdin is not None:
                sent = _pump(stdin, channel.sendall)
                channel.shutdown_write()
            out, errs = bytearray(), bytearray()
            while True:  # until the remote's EOF (sent after all of stdout and stderr) and both buffers drained
                got = False
                if channel.recv_ready():
                    out += channel.recv(CHUNK)
                    got = True
                if channel.recv_stderr_ready():
                    errs += channel.recv_stderr(CHUNK)
                    got = True
                if not got:
                    if channel.eof_received:  # data that came just before the EOF is in the buffers now
                        while channel.recv_ready():
                            out += channel.recv(CHUNK)
                        while channel.recv_stderr_ready():
                            errs += channel.recv_stderr(CHUNK)
                        break
                    time.sleep(0.01)
            code = channel.recv_exit_status()
            channel.close()
        except (paramiko.SSHException, OSError) as err:
            raise DeployError(f"{self.name}: running '{command}' failed ({type(err).__name__}: {err})",
                              hint="check the SSH connection to the device") from err
        return Done(code, out.decode(errors="replace"), errs.decode(errors="replace"), sent)

    def close(self) -> None:
        self.client.close()


def _socket_error(err: OSError) -> str:
    """The errno name and text of a connection failure (paramiko wraps one per address tried)."""
    inner = next(iter(getattr(err, "errors", {}).values()), err)
    number = getattr(inner, "errno", None)
    name = errno.errorcode.get(number, type(inner).__name__) if number else type(inner).__name__
    return f"{name}: {getattr(inner, 'strerror', None) or inner}"


def open_engine(device: str | None, *, identity: Path | None = None, known_hosts: Path | None = None,
                docker: str = "docker") -> Engine:
    """The local engine (device None) or the one at ssh://…"""
    if device is None:
        return LocalEngine(docker)
    return SshEngine(SshTarget.parse(device), identity=identity, known_hosts=known_hosts, docker=docker)
