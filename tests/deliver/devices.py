"""Simulated edge devices for the fleet tests: each an OpenSSH server on its own loopback port in front of a Docker
engine of its own (`dockerd` with its own data root, exec root, pid file and unix socket), as a real device is.

Each engine runs in a network namespace of its own (`unshare --net`, only its loopback up): dockerd started with
`--bridge none` deletes the host's `docker0` interface when it starts (moby's removeDefaultBridgeInterface), which
would break the shared engine's default network; in its own namespace it only sees its own interfaces, and its
containers (host networking: `network = "host"` in FLEET.toml) listen on the device's own ports. The device's sshd
points `docker` at the engine (sshd_config SetEnv DOCKER_HOST). The engines' sockets are unix sockets, reachable
from the host's namespace.

Robust to a killed test run: every run keeps its devices under one folder of DEVICES_ROOT whose lock it holds while
it lives (flock: the kernel drops it however the process ends); dockerd is started to get SIGTERM when its parent
dies (a clean shutdown that stops its containers), sshd SIGKILL. Before starting devices, a run sweeps the folders
whose lock is free: it stops whatever still runs from them (an engine started again on the same roots cleans up the
containers of one that was killed), unmounts what is mounted under them and removes them.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import stop_process
from tests.deliver.conftest import Sshd, _keygen, start_sshd

DEVICES_ROOT = Path(tempfile.gettempdir()) / "mlpack-test-devices"


@dataclass(frozen=True, slots=True)
class SimDevice:
    name: str
    folder: Path
    ssh: Sshd

    @property
    def socket(self) -> Path:
        return self.folder / "docker.sock"

    def docker(self, *args: str, check: bool = True) -> str:
        """`docker` against this device's engine (as the device itself would run it)."""
        done = subprocess.run(["docker", "-H", f"unix://{self.socket}", *args], capture_output=True, text=True,
                              timeout=300, check=False)
        if check and done.returncode != 0:
            raise AssertionError(f"{self.name}: docker {' '.join(args)} failed: {done.stderr.strip()}")
        return done.stdout.strip()


def _dockerd_argv(folder: Path) -> list[str]:
    (folder / "daemon.json").write_text("{}\n")  # not the machine's /etc/docker/daemon.json
    dockerd = (f"dockerd --config-file {folder}/daemon.json --data-root {folder}/data --exec-root {folder}/exec "
               f"--pidfile {folder}/docker.pid -H unix://{folder}/docker.sock --bridge none --iptables=false "
               f"--ip-forward=false --ip-masq=false")
    return ["unshare", "--net", "sh", "-c", f"ip link set lo up && exec {dockerd}"]


def _wait_socket(path: Path, proc: subprocess.Popen[bytes] | None, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"dockerd exited ({proc.returncode}): {log.read_text()[-2000:]}")
        with suppress(OSError), socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(path))
            done = subprocess.run(["docker", "-H", f"unix://{path}", "version", "--format", "{{.Server.Version}}"],
                                  capture_output=True, timeout=10, check=False)
            if done.returncode == 0:
                return
        time.sleep(0.2)
    raise RuntimeError(f"dockerd did not answer on {path} within {timeout} s: {log.read_text()[-2000:]}")


def _pid(path: Path) -> int | None:
    with suppress(OSError, ValueError):
        pid = int(path.read_text().strip())
        os.kill(pid, 0)
        return pid
    return None


def _stop_pid(pid: int, timeout: float = 30) -> None:
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        # reap it when it is our child
        with suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)
        time.sleep(0.1)
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _leftovers(folder: Path) -> list[int]:
    """Processes whose command line names `folder` (containerd shims of a killed engine, an sshd)."""
    found = []
    needle = str(folder).encode()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            with suppress(OSError):
                if needle in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _unmount(folder: Path) -> None:
    mounts = []
    with suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            point = line.split()[4].replace("\\040", " ")
            if point == str(folder) or point.startswith(f"{folder}/"):
                mounts.append(point)
    for point in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", point], capture_output=True, check=False)


def _teardown(folder: Path) -> None:
    """Stop everything of one run's devices and remove its folder."""
    for device in sorted(p for p in folder.iterdir() if p.is_dir()):
        pid = _pid(device / "docker.pid")
        if pid is None and any(b"containerd-shim" in _cmdline(p) for p in _leftovers(device)):
            # a killed engine left containers: an engine started on the same roots stops them as it starts
            log = device / "dockerd-sweep.log"
            with log.open("wb") as out:
                proc = subprocess.Popen(_dockerd_argv(device), stdout=out, stderr=subprocess.STDOUT)
            with suppress(RuntimeError):
                _wait_socket(device / "docker.sock", proc, log, timeout=30)
            pid = proc.pid
        if pid is not None:
            _stop_pid(pid)
        for sshd in [_pid(device / "ssh" / "sshd.pid")] + _leftovers(device):
            if sshd is not None:
                _stop_pid(sshd, timeout=5)
        _unmount(device)
    _unmount(folder)
    shutil.rmtree(folder, ignore_errors=True)


def sweep() -> None:
    """Remove the devices of runs that are gone (their folder's lock is free)."""
    if not DEVICES_ROOT.is_dir():
        return
    for folder in DEVICES_ROOT.iterdir():
        lock = folder / "owner.lock"
        if not folder.is_dir():
            continue
        try:
            handle = lock.open("a")
        except OSError:
            continue
        with handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                continue  # its run is alive
            _teardown(folder)


@contextmanager
def fleet(count: int) -> Iterator[list[SimDevice]]:
    """`count` devices, started in parallel; every one is stopped and removed afterwards (and on any failure)."""
    from mlpk.packager import processes

    sweep()
    DEVICES_ROOT.mkdir(exist_ok=True)
    folder = DEVICES_ROOT / f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    folder.mkdir()
    lock = (folder / "owner.lock").open("a")
    fcntl.flock(lock, fcntl.LOCK_EX)
    engines: list[tuple[Path, subprocess.Popen[bytes]]] = []
    servers: list[subprocess.Popen[bytes]] = []
    try:
        keys = folder / "keys"
        keys.mkdir()
        _keygen(keys / "host_key")
        _keygen(keys / "client_key")
        for number in range(1, count + 1):
            device = folder / f"dev{number}"
            device.mkdir()
            with (device / "dockerd.log").open("wb") as out:
                engines.append((device, processes.popen(_dockerd_argv(device), stdout=out, stderr=subprocess.STDOUT,
                                                        death_signal=signal.SIGTERM)))
        devices = []
        for number, (device, proc) in enumerate(engines, 1):
            _wait_socket(device / "docker.sock", proc, device / "dockerd.log")
            ssh, server = start_sshd(device / "ssh", host_key=keys / "host_key", client_key=keys / "client_key",
                                     extra=f"SetEnv DOCKER_HOST=unix://{device}/docker.sock\n")
            servers.append(server)
            devices.append(SimDevice(f"edge-{number}", device, ssh))
        yield devices
    finally:
        for server in servers:
            stop_process(server)
        for _, proc in engines:
            _stop_pid(proc.pid)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        fcntl.flock(lock, fcntl.LOCK_UN)
        lock.close()
        _teardown(folder)
