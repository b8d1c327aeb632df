"""`mlpack base build` through the real console script: --plan, --json, and a user error."""

from __future__ import annotations

import json
from pathlib import Path


def test_plan_lists_the_closure_without_building(mlpack, tmp_path: Path, debian_archive: str) -> None:
    env = {"MLPACK_CACHE": str(tmp_path / "cache")}
    done = mlpack("--json", "base", "build", "--plan", "--suite", "trixie", "--arch", "arm64", "--tzdata", env=env)
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    names = {row.split("=")[0] for row in plan["packages"]}
    assert {"python3.13-minimal", "libpython3.13-stdlib", "ca-certificates", "tzdata", "libc6"} <= names
    assert not names & {"dpkg", "debconf", "perl-base", "coreutils", "bash"}  # no scripts' deps, no Essential
    assert 20 < len(names) < 60 and plan["installed_bytes"] > 20_000_000
    assert not (tmp_path / "cache" / "base" / "images").exists()  # a plan builds nothing
    bad = mlpack("base", "build", "--plan", "--packages", "python3.13-minimall", "--suite", "trixie", env=env)
    assert bad.returncode == 7
    assert "error: package 'python3.13-minimall' is not in the amd64 indices. Hint: did you mean python3.13-minimal"\
        in bad.stderr
