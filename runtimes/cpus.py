"""How many CPUs this process may really use: the container's CPU quota (cgroup v2 `cpu.max`, or cgroup v1
`cpu.cfs_quota_us` / `cpu.cfs_period_us`) and its CPU affinity, not the host's core count.

onnxruntime sizes its intra-op pool by the host's cores by default; in a container limited to 2 CPUs on a 64-core
host that means 64 threads fighting over 2 CPUs' worth of time slices, which throttles badly (the CFS quota is
spent in a few milliseconds, then every thread waits out the period).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def _own_cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """Controller -> this process's cgroup path, from /proc/self/cgroup ("" is the v2 unified hierarchy)."""
    paths: dict[str, str] = {}
    try:
        lines = proc_cgroup.read_text().splitlines()
    except OSError:
        return paths
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(","):
                paths[controller] = parts[2]
    return paths


def _v2_quota(root: Path, path: str) -> float | None:
    # Walk from our own cgroup up to the root: a limit set on any ancestor applies (the tightest one wins).
    best: float | None = None
    current = Path(path.lstrip("/"))
    while True:
        try:
            quota, period = (root / current / "cpu.max").read_text().split()[:2]
        except (OSError, ValueError):
            quota, period = "max", "0"
        if quota != "max" and int(period) > 0:
            cpus = int(quota) / int(period)
            best = cpus if best is None else min(best, cpus)
        if current == Path("."):
            return best
        current = current.parent


def _v1_quota(root: Path, path: str) -> float | None:
    for controller in ("cpu,cpuacct", "cpu"):
        base = root / controller
        for candidate in (base / path.lstrip("/"), base):
            try:
                quota = int((candidate / "cpu.cfs_quota_us").read_text())
                period = int((candidate / "cpu.cfs_period_us").read_text())
            except (OSError, ValueError):
                continue
            return quota / period if quota > 0 and period > 0 else None
    return None


def quota(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> float | None:
    """The CPU quota of this process's cgroup in CPUs (e.g. 1.5), or None when unlimited or unknown."""
    paths = _own_cgroup_paths(proc_cgroup)
    if (root / "cgroup.controllers").exists():
        return _v2_quota(root, paths.get("", "/"))
    return _v1_quota(root, paths.get("cpu", "/"))


def available(root: Path = CGROUP_ROOT, proc_cgroup: Path = Path("/proc/self/cgroup")) -> int:
    """CPUs to size thread pools by: the quota rounded up, capped by the CPUs this process may be scheduled on."""
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = os.cpu_count() or 1
    limit = quota(root, proc_cgroup)
    if limit is None:
        return max(1, allowed)
    return max(1, min(allowed, math.ceil(limit)))
