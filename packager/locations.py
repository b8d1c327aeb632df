"""Where mlpack keeps things on the build machine: its cache, and tools it unpacked there."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """The root of mlpack's cache: $MLPACK_CACHE, else $XDG_CACHE_HOME/mlpack, else ~/.cache/mlpack."""
    explicit = os.environ.get("MLPACK_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mlpack"


def lambda_rie(arch: str) -> Path:
    """The Lambda Runtime Interface Emulator binary for `arch` (x86_64 | arm64), as tests/services/provision.sh
    unpacks it from the aws-sam-cli wheel."""
    return cache_dir() / "rie" / f"aws-lambda-rie-{arch}"
