"""A blob cache that heals (issue 18): a cached blob whose bytes no longer match its digest is evicted and pulled
again from the registry it came from (once: a registry that also serves wrong bytes is reported), and a build on
that base then succeeds with the clean digest. Real parts: Debian's docker-registry on loopback, the real CLI."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pytest

from mlpk.packager.errors import RegistryError
from mlpk.packager.oci import Entry, Image, append_layers, empty_image, image_from_registry, layer_from_entries
from mlpk.packager.oci import remote
from mlpk.packager.oci.cache import BlobCache
from mlpk.packager.oci.validate import validate_image

pytestmark = pytest.mark.registry


def _spoil(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])


def _blob_gets(registry, digest: object) -> int:
    return sum(1 for r in registry.requests() if r == f"GET /v2/heal/image/blobs/{digest}")


def test_a_corrupted_cached_blob_is_pulled_again_once(fresh_registry, tmp_path: Path) -> None:
    payload = os.urandom(200_000)
    layer = layer_from_entries([Entry("/data", data=payload)])
    ref = f"{fresh_registry.host}/heal/image:1"
    remote.push(append_layers(empty_image(), layer), ref)
    cache = BlobCache(tmp_path / "pulls")
    pulled = image_from_registry(ref, cache=cache)
    with pulled.layers[0].open() as first:
        clean = first.read()
    assert _blob_gets(fresh_registry, layer.digest) == 1

    _spoil(cache.path(layer.digest))
    with pulled.layers[0].open() as again:
        assert again.read() == clean, "the cached copy was not used: its bytes do not match"
    assert _blob_gets(fresh_registry, layer.digest) == 2, "pulled once more"
    assert cache.check() == []
    validate_image(pulled)
    with pulled.layers[0].open() as third:
        third.read()
    assert _blob_gets(fresh_registry, layer.digest) == 2, "a sound cached copy is used as it is"

    _spoil(cache.path(layer.digest))
    stored = next(fresh_registry.root.rglob(f"blobs/sha256/{layer.digest.hex[:2]}/{layer.digest.hex}/data"))
    _spoil(stored)
    with pytest.raises(RegistryError, match=f"blob from {fresh_registry.host}/heal/image {layer.digest} hashes to"):
        pulled.layers[0].open()
    assert _blob_gets(fresh_registry, layer.digest) == 3, "one more pull, then the error"
    assert not cache.has(layer.digest), "neither the bad copy nor the bad pull is kept"


def test_a_build_on_a_registry_base_heals_a_corrupted_cached_layer(mlpack: Callable[..., object], registry,
                                                                   busybox_base: Callable[[str], Image],
                                                                   blob_cache: BlobCache, tmp_path: Path) -> None:
    base = f"{registry.host}/heal/base:1"
    remote.push(busybox_base("amd64"), base)
    app = tmp_path / "app"
    app.mkdir()
    (app / "run").write_text("#!/bin/sh\necho healed\n")
    args = ["--json", "build", "--base", base, "--add", f"{app}:/app", "--entrypoint", "/app/run"]
    first = mlpack(*args, "--layout", str(tmp_path / "one"), check=True)
    (base_layer,) = busybox_base("amd64").layers
    assert blob_cache.has(base_layer.digest), "the build pulled the base layer into $MLPACK_CACHE"
    _spoil(blob_cache.path(base_layer.digest))

    second = mlpack(*args, "--layout", str(tmp_path / "two"), check=True)

    assert json.loads(second.stdout)["digest"] == json.loads(first.stdout)["digest"]
    assert blob_cache.check() == []
    done = mlpack("cache", "verify", env={"MLPACK_CACHE": str(blob_cache.root.parent)})
    assert done.returncode == 0, done.stdout + done.stderr
