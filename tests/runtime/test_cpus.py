"""CPU counting from cgroup files. The kernel is the boundary: these tests write the files it would expose (cgroup v2
`cpu.max`, cgroup v1 `cpu.cfs_quota_us`/`cpu.cfs_period_us`, /proc/self/cgroup) in the kernel's formats."""

from __future__ import annotations

import os
from pathlib import Path

from mlpk.runtimes import cpus


def v2_tree(root: Path, own: str, limits: dict[str, str]) -> Path:
    (root / "cgroup.controllers").parent.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpuset cpu io memory pids\n")
    for path, value in limits.items():
        folder = root / path.lstrip("/")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "cpu.max").write_text(value + "\n")
    proc = root.parent / "proc-self-cgroup"
    proc.write_text(f"0::{own}\n")
    return proc


def test_v2_quota_in_own_cgroup(tmp_path: Path) -> None:
    proc = v2_tree(tmp_path / "cg", "/kubepods/pod1/ctr", {"/": "max 100000", "/kubepods/pod1/ctr": "150000 100000"})
    assert cpus.quota(tmp_path / "cg", proc) == 1.5
    assert cpus.available(tmp_path / "cg", proc) == min(2, len(os.sched_getaffinity(0)))


def test_v2_tightest_ancestor_wins(tmp_path: Path) -> None:
    proc = v2_tree(tmp_path / "cg", "/a/b", {"/a": "50000 100000", "/a/b": "max 100000"})
    assert cpus.quota(tmp_path / "cg", proc) == 0.5
    assert cpus.available(tmp_path / "cg", proc) == 1


def test_v2_unlimited_uses_affinity(tmp_path: Path) -> None:
    proc = v2_tree(tmp_path / "cg", "/", {"/": "max 100000"})
    assert cpus.quota(tmp_path / "cg", proc) is None
    assert cpus.available(tmp_path / "cg", proc) == len(os.sched_getaffinity(0))


def test_v1_quota(tmp_path: Path) -> None:
    folder = tmp_path / "cg" / "cpu,cpuacct" / "docker" / "abc"
    folder.mkdir(parents=True)
    (folder / "cpu.cfs_quota_us").write_text("300000\n")
    (folder / "cpu.cfs_period_us").write_text("100000\n")
    proc = tmp_path / "proc"
    proc.write_text("12:cpu,cpuacct:/docker/abc\n11:memory:/docker/abc\n")
    assert cpus.quota(tmp_path / "cg", proc) == 3.0
    (folder / "cpu.cfs_quota_us").write_text("-1\n")
    assert cpus.quota(tmp_path / "cg", proc) is None


def test_this_machine() -> None:
    assert 1 <= cpus.available() <= len(os.sched_getaffinity(0))
