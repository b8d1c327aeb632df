"""Running images of another architecture on this machine (qemu-user through binfmt_misc), and its one trap.

onnxruntime's CPU detection (pytorch/cpuinfo) reads /sys/devices/system/cpu. Under qemu-user emulation an arm64
process sees the x86-64 host's sysfs there, and importing onnxruntime then hangs for minutes and dies with SIGSEGV
(seen here with onnxruntime 1.31.1 aarch64 under qemu 7.2). Hiding that directory behind an empty tmpfs makes
cpuinfo fall back to its defaults — the same path it takes on AWS Lambda arm64, where those files are absent too
(onnxruntime issue #10038) — and the import takes seconds. Real arm64 hosts need none of this.
"""

from __future__ import annotations

import platform as host

ARCH_OF_MACHINE = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def emulated(image_platform: str) -> bool:
    """Whether an image for `image_platform` (linux/ARCH) runs emulated on this machine."""
    arch = image_platform.rsplit("/", 1)[-1]
    return ARCH_OF_MACHINE.get(host.machine().lower(), host.machine().lower()) != arch


def docker_run_args(image_platform: str) -> list[str]:
    """Extra `docker run` arguments (beside --platform) for an image of `image_platform` on this machine."""
    if not emulated(image_platform):
        return []
    return ["--tmpfs", "/sys/devices/system/cpu:ro"]
