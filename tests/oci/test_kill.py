"""Killing mlpack (SIGKILL, no cleanup) at random points of a layout write and of a push: the output is absent or
complete and valid, the blob cache stays valid, and a rerun succeeds."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mlpk.packager.errors import RegistryError
from mlpk.packager.oci import layout, remote
from mlpk.packager.oci.cache import BlobCache
from mlpk.packager.oci.validate import validate
from tests.conftest import REPO
from tests.oci import killee

TRIALS = 10  # per sink: 20 in all


def _start(mode: str, dest: str, cache: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MLPACK_CACHE": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "tests.oci.killee", mode, dest], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _duration(mode: str, dest: str, cache: Path) -> float:
    started = time.monotonic()
    proc = _start(mode, dest, cache)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    return time.monotonic() - started


def _kill_at_random(mode: str, dest: str, cache: Path, within: float, rng: random.Random) -> bool:
    """Start a run and SIGKILL it after a random delay; True when it was killed before finishing."""
    proc = _start(mode, dest, cache)
    time.sleep(rng.uniform(0.0, within))
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    return proc.returncode == -signal.SIGKILL


@pytest.mark.slow
def test_killed_layout_writes_leave_nothing_or_a_valid_layout(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(int(os.environ.get("MLPACK_KILL_SEED", "7")))
    # two caches: one warmed by the calibration run (trials die while writing), one that starts cold (early
    # trials die while building layers into it)
    within = _duration("layout", str(tmp_path / "calibrate"), tmp_path / "calibrate-cache") * 1.1
    killed = 0
    for trial in range(TRIALS):
        cache = tmp_path / ("cold" if trial % 2 else "calibrate-cache")
        dest = tmp_path / f"out-{trial % 3}"
        killed += _kill_at_random("layout", str(dest), cache, within, rng)
        if dest.exists():
            validate(layout.read(dest, "k"))
        assert BlobCache(cache / "blobs").check() == []
    assert killed >= TRIALS // 2, f"only {killed} of {TRIALS} runs were killed before they finished"
    monkeypatch.setenv("MLPACK_CACHE", str(tmp_path / "cold"))
    out = tmp_path / "out-0"
    killee.run("layout", str(out))
    validate(layout.read(out, "k"))
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".out-0.tmp-")) == []


@pytest.mark.slow
@pytest.mark.registry
def test_killed_pushes_leave_no_tag_or_a_valid_image(registry, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(int(os.environ.get("MLPACK_KILL_SEED", "7")))
    cache = tmp_path / "cache"
    monkeypatch.setenv("MLPACK_CACHE", str(cache))
    killee.image()  # a warm cache: every trial dies inside the push itself
    within = _duration("push", f"{registry.host}/kill/calibrate:1", cache) * 1.1
    killed = 0
    for trial in range(TRIALS):
        ref = f"{registry.host}/kill/t{trial}:1"
        killed += _kill_at_random("push", ref, cache, within, rng)
        try:
            pushed = remote.image_from_registry(ref, cache=BlobCache(tmp_path / f"pull-{trial}"))
        except RegistryError as err:
            assert "404" in str(err), err
        else:
            validate(pushed)
        assert BlobCache(cache / "blobs").check() == []
        killee.run("push", ref)  # the rerun completes what the killed run began
        validate(remote.image_from_registry(ref, cache=BlobCache(tmp_path / f"rerun-{trial}")))
    assert killed >= TRIALS // 2, f"only {killed} of {TRIALS} runs were killed before they finished"
