"""Small probes of the build machine: which tools and services are here.

`mlpack doctor` shows them with fixes, and the test suite uses the same probes to decide which integration tests
can run (under CI=true a failed probe fails the test instead of skipping it).
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from mlpk.packager import locations

PROVISION = "bash tests/services/provision.sh"


@dataclass(frozen=True, slots=True)
class Probe:
    """The answer of one probe: whether the thing is usable, what was seen, and how to fix it when not."""

    ok: bool
    detail: str
    fix: str = ""


def _run(*argv: str, timeout: float = 10) -> subprocess.CompletedProcess[str] | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None


def tool(name: str, package: str | None = None) -> Probe:
    """A command-line tool on PATH."""
    path = shutil.which(name)
    if path:
        return Probe(True, path)
    return Probe(False, f"'{name}' is not on PATH", f"apt-get install {package or name}  (or {PROVISION})")


def docker_engine() -> Probe:
    """A Docker engine that answers `docker info`."""
    if not shutil.which("docker"):
        return Probe(False, "the docker client is not installed", f"apt-get install docker.io  (or {PROVISION})")
    done = _run("docker", "info", "--format", "{{.ServerVersion}}")
    if done is None or done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or ["no answer"])[-1] if done else "no answer in 10 s"
        return Probe(False, f"no Docker engine answers: {reason}", f"start dockerd  (or {PROVISION})")
    return Probe(True, f"Docker engine {done.stdout.strip()}")


def swarm_manager() -> Probe:
    """The Docker engine is a manager of an active Swarm (`mlpack deploy swarm` needs one)."""
    engine = docker_engine()
    if not engine.ok:
        return engine
    done = _run("docker", "info", "--format", "{{.Swarm.LocalNodeState}} {{.Swarm.ControlAvailable}} {{.Swarm.Nodes}}")
    state, manager, nodes = ((done.stdout.split() if done and done.returncode == 0 else []) + ["?", "?", "?"])[:3]
    if state != "active":
        return Probe(False, f"the Docker engine is not in a swarm (state: {state})",
                     f"docker swarm init --advertise-addr 127.0.0.1 --listen-addr 127.0.0.1:2377  (or {PROVISION})")
    if manager != "true":
        return Probe(False, "the Docker engine is a swarm worker, not a manager",
                     "point DOCKER_HOST at a manager node (docker node ls lists them)")
    return Probe(True, f"swarm manager ({nodes} node{'s' if nodes != '1' else ''})")


def arm64_emulation() -> Probe:
    """qemu-aarch64 registered with binfmt_misc, so linux/arm64 images run on this x86-64 machine."""
    if platform.machine() in ("aarch64", "arm64"):
        return Probe(True, "this machine is arm64: no emulation needed")
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    try:
        text = entry.read_text()
    except OSError:
        return Probe(
            False,
            "no qemu-aarch64 entry in /proc/sys/fs/binfmt_misc",
            f"apt-get install qemu-user-static and register it  (or {PROVISION})",
        )
    if not text.startswith("enabled"):
        return Probe(False, "qemu-aarch64 is registered but disabled", f"echo 1 > {entry}")
    flags = next((line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("flags:")), "")
    if "F" not in flags:
        return Probe(False, f"qemu-aarch64 is registered without flag F (flags: {flags or 'none'}), so it "
                     "cannot run inside containers", f"re-register it with flag F  ({PROVISION})")
    return Probe(True, f"qemu-aarch64 registered (flags {flags})")


def lambda_rie() -> Probe:
    """The AWS Lambda Runtime Interface Emulator for both architectures."""
    paths = [locations.lambda_rie(arch) for arch in ("x86_64", "arm64")]
    missing = [str(p) for p in paths if not os.access(p, os.X_OK)]
    if missing:
        return Probe(False, f"missing {', '.join(missing)}", f"{PROVISION}  (unpacks it from the aws-sam-cli wheel)")
    return Probe(True, str(paths[0].parent))


def moto_server() -> Probe:
    """moto's server, a local AWS emulator for ECR and Lambda management calls."""
    # A virtual environment's console scripts sit beside its interpreter, which need not be on PATH.
    beside = Path(sys.executable).with_name("moto_server")
    path = str(beside) if os.access(beside, os.X_OK) else shutil.which("moto_server")
    if path:
        return Probe(True, path)
    return Probe(False, "moto_server is not on PATH", "pip install 'mlpack-packager[dev]'  (it brings moto[server])")
