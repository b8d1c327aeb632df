"""An export heals its cache (issue 18): when the remembered deps layer's blob and the cached base's layer blob no
longer match their digests, the next `mlpack export` evicts them, rebuilds both and writes the image it wrote
before, digest for digest (it used to stop every later export with exit 8)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mlpk.packager import locations
from mlpk.packager.oci import layout
from mlpk.packager.oci.validate import validate
from tests.export import models

pytestmark = pytest.mark.slow


def _cache(tmp_path: Path) -> Path:
    """A cache of this test's own that shares only the verified downloads (Debian packages, wheels) of the
    user's, so nothing is fetched twice and nothing of the user's is spoiled."""
    user = locations.cache_dir()
    cache = tmp_path / "cache"
    (cache / "base").mkdir(parents=True)
    for rel in ("base/downloads", "wheels"):
        (user / rel).mkdir(parents=True, exist_ok=True)
        (cache / rel).symlink_to(user / rel)
    return cache


def _spoil(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:500] + bytes([data[500] ^ 0xFF]) + data[501:])


def test_an_export_rebuilds_corrupted_deps_and_base_blobs(mlpack, tmp_path: Path) -> None:
    cache = _cache(tmp_path)
    model = models.mlp(tmp_path / "m", name="healer")

    def export(out: str) -> dict[str, Any]:
        done = mlpack("--json", "export", str(model), "--target", "lambda", "--quantize", "none", "-o",
                      str(tmp_path / out), env={"MLPACK_CACHE": str(cache)}, timeout=900)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    first = export("one")
    layers = {layer["name"]: layer["digest"].removeprefix("sha256:") for layer in first["platforms"][0]["layers"]}
    spoiled = [cache / "blobs" / "sha256" / layers["deps"]]
    spoiled += [p for p in (cache / "base").rglob(layers["base"]) if p.is_file()]  # the layout's and the cache's
    assert len(spoiled) >= 2
    for path in spoiled:
        _spoil(path)

    second = export("two")

    assert second["digest"] == first["digest"]
    assert second["platforms"][0]["layers"] == first["platforms"][0]["layers"]
    validate(layout.read(tmp_path / "two" / "oci"))
    done = mlpack("cache", "verify", env={"MLPACK_CACHE": str(cache)})
    assert done.returncode == 0, done.stdout + done.stderr
