"""Fixtures of the OCI tests: a blob cache per test, and busybox base images built from Debian's busybox-static
package (no Docker Hub here) with mlpack's own layer code, cached across runs in the pytest cache."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from mlpk.packager.oci import Entry, Image, Platform, append_layers, empty_image, layer_from_entries, with_config
from mlpk.packager.oci.cache import BlobCache
from tests.conftest import require

ARCHES = ("amd64", "arm64")


@pytest.fixture(autouse=True)
def blob_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> BlobCache:
    """Every test gets its own empty cache ($MLPACK_CACHE), so no test sees another's blobs."""
    monkeypatch.setenv("MLPACK_CACHE", str(tmp_path / "mlpack-cache"))
    return BlobCache(tmp_path / "mlpack-cache" / "blobs")


def _download_busybox(arch: str, work: Path) -> Path:
    """bin/busybox for `arch`, from the busybox-static .deb of the machine's Debian mirror (apt reads the sources;
    the machine's dpkg architectures are left alone)."""
    out = work / arch / "busybox"
    if out.exists():
        return out
    state = work / arch / "apt"
    for sub in ("lists/partial", "cache/archives/partial"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    opts = [f"-oAPT::Architecture={arch}", f"-oAPT::Architectures={arch}", f"-oDir::State::Lists={state}/lists",
            f"-oDir::Cache={state}/cache", "-qq"]
    subprocess.run(["apt-get", *opts, "update"], check=True, capture_output=True, timeout=300)
    subprocess.run(["apt-get", *opts, "download", "busybox-static"], check=True, capture_output=True,
                   cwd=work / arch, timeout=300)
    deb = next((work / arch).glob("busybox-static_*.deb"))
    root = work / arch / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=120)
    shutil.copy2(root / "bin" / "busybox", out)
    return out


@pytest.fixture(scope="session")
def busybox_base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Image]:
    """A function arch -> a busybox base image (busybox plus sh/uname/echo/cat/ls symlinks) for that arch."""
    require("apt")  # apt-get and dpkg-deb fetch and unpack busybox-static
    require("dpkg")
    work = Path(request.config.cache.mkdir("mlpack-busybox"))
    cache = BlobCache(tmp_path_factory.mktemp("busybox-blobs"))
    built: dict[str, Image] = {}

    def base(arch: str) -> Image:
        if arch not in built:
            binary = _download_busybox(arch, work)
            entries = [Entry("/bin/busybox", source=binary, mode=0o755)]
            entries += [Entry(f"/bin/{name}", "symlink", target="busybox") for name in ("sh", "uname", "echo",
                                                                                       "cat", "ls")]
            entries += [Entry("/tmp", "dir", mode=0o1777)]
            layer = layer_from_entries(entries, cache=cache)
            img = append_layers(empty_image(Platform("linux", arch)), layer, created_by="busybox-static (test base)")
            built[arch] = with_config(img, env={"PATH": "/bin"}, cmd=["/bin/sh"])
        return built[arch]

    return base
