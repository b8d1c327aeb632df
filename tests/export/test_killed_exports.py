"""`kill -9` at random moments of real `mlpack export` runs (issue 18): each time the output is absent or complete,
no child the run started lives on, and after the next run no temporary folder, record or temporary blob is left.

The exports are the cpu target for amd64 with a small generated MLP; the cache is the test's own (so its temporary
files are all this test's), sharing only the verified downloads with mlpack's default cache (Debian packages and
built bases, wheels), so no trial waits on the network. The first trials die while the deps layer is being
installed (cold cache), the later ones while the image is assembled and written.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlpk.packager import locations
from mlpk.packager.oci import layout
from mlpk.packager.oci.validate import validate
from tests.export import models

TRIALS = 10
PROFILE = 'extends = "cpu"\nname = "cpu-amd64"\nplatforms = ["linux/amd64"]\n'
SHARED = ("base", "wheels")  # verified, content-addressed downloads; everything else is the test's own


def _cache(root: Path) -> Path:
    """A cache of its own whose download areas are mlpack's default ones."""
    for name in SHARED:
        shared = locations.cache_dir() / name
        shared.mkdir(parents=True, exist_ok=True)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).symlink_to(shared, target_is_directory=True)
    return root


class Exports:
    """Starts `mlpack export` of one model to one output, against one cache."""

    def __init__(self, tmp_path: Path) -> None:
        self.model = models.mlp(tmp_path / "model")
        self.profile = tmp_path / "cpu-amd64.toml"
        self.profile.write_text(PROFILE)
        self.tmp_path = tmp_path

    def start(self, out: Path, cache: Path) -> subprocess.Popen[bytes]:
        exe = Path(sys.executable).with_name("mlpack")
        argv = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlpk.packager.cli"]
        return subprocess.Popen([*argv, "--json", "export", str(self.model), "--target", str(self.profile),
                                 "--quantize", "none", "-o", str(out)], env={**os.environ, "MLPACK_CACHE": str(cache)},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def complete(self, out: Path, cache: Path) -> float:
        """Run one export to the end; its duration in seconds."""
        started = time.monotonic()
        proc = self.start(out, cache)
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err.decode()
        return time.monotonic() - started


def _children_of(marker: str) -> list[str]:
    """Command lines of live processes that mention `marker` (the trial's paths), zombies aside."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z":
            found.append(cmdline)
    return found


def _absent_or_complete(out: Path) -> None:
    if not out.exists():
        return
    report = json.loads((out / "report.json").read_text())
    assert (out / report["platforms"][0]["archive"]).is_file()
    validate(layout.read(out / "oci"))


def _leftovers(work: Path, cache: Path) -> list[str]:
    """Temporary things a run may leave: folders beside the output, run records and folders, temporary blobs (in
    the test's own areas of the cache: the shared ones may hold the files of other live mlpack processes)."""
    found = [p.name for p in work.iterdir() if p.name.startswith(".")]
    found += [f"runs/{p.name}" for p in (cache / "runs").glob("*")] if (cache / "runs").is_dir() else []
    tmp = cache / "blobs" / "tmp"
    found += [f"blobs/tmp/{p.name}" for p in tmp.glob("*")] if tmp.is_dir() else []
    return found


@pytest.mark.slow
def test_killed_exports_leave_nothing_after_the_next_run(tmp_path: Path) -> None:
    rng = random.Random(int(os.environ.get("MLPACK_KILL_SEED", "18")))
    exports = Exports(tmp_path)
    calibration = _cache(tmp_path / "calibration-cache")
    cold = exports.complete(tmp_path / "calibration" / "out", calibration)  # installs the deps
    warm = exports.complete(tmp_path / "calibration" / "out", calibration)  # re-uses them
    cache = _cache(tmp_path / "cache")
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out"
    killed, left = 0, 0
    for _ in range(TRIALS):
        deps_cached = (cache / "layers").is_dir() and any((cache / "layers").glob("deps-*.json"))
        proc = exports.start(out, cache)
        time.sleep(rng.uniform(0.2, (warm if deps_cached else cold) * 1.1))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        killed += proc.returncode == -signal.SIGKILL
        _absent_or_complete(out)
        left += bool(_leftovers(work, cache))
        deadline = time.monotonic() + 5  # a child gets its SIGKILL from the kernel as its parent dies
        while _children_of(str(tmp_path)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _children_of(str(tmp_path)) == [], "a child of the killed export lives on"
    assert killed >= TRIALS // 2, f"only {killed} of {TRIALS} exports were killed before they finished"
    assert left >= 1, "no killed export left anything behind: the trials did not test the sweep"
    print(f"{killed} of {TRIALS} exports killed, {left} left temporary work for the next run to sweep")
    exports.complete(out, cache)
    _absent_or_complete(out)
    assert out.is_dir()
    assert _leftovers(work, cache) == []
