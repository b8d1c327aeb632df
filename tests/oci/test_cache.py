"""The blob cache: digests verified on read, safe under concurrent writers and interrupted ones; and a registry
that serves bytes not matching their digest is refused."""

from __future__ import annotations

import multiprocessing
import os
from pathlib import Path

import pytest

from mlpk.packager.errors import RegistryError
from mlpk.packager.oci import Entry, append_layers, empty_image, image_from_registry, layer_from_entries, remote
from mlpk.packager.oci import layout
from mlpk.packager.oci.cache import BlobCache
from mlpk.packager.oci.digest import Digest

DATA = os.urandom(3 << 20)


def _put(root: str) -> str:
    cache = BlobCache(Path(root))
    import io

    return str(cache.put(io.BytesIO(DATA), Digest.of(DATA), len(DATA)))


def test_concurrent_writers_of_one_blob_all_succeed(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(6) as pool:
        paths = pool.map(_put, [str(tmp_path / "c")] * 12)
    cache = BlobCache(tmp_path / "c")
    assert len(set(paths)) == 1 and Path(paths[0]).read_bytes() == DATA
    assert cache.check() == []
    assert list((tmp_path / "c" / "tmp").iterdir()) == []


def test_interrupted_writer_leaves_no_blob(tmp_path: Path) -> None:
    cache = BlobCache(tmp_path / "c")
    with pytest.raises(KeyboardInterrupt), cache.writer() as pending:
        pending.file.write(DATA[:1000])
        raise KeyboardInterrupt
    assert not cache.has(Digest.of(DATA)) and list((tmp_path / "c" / "tmp").iterdir()) == []
    stale = tmp_path / "c" / "tmp" / "12345-killed"
    stale.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    assert cache.prune_tmp() == 1 and not stale.exists()


def test_a_cached_blob_that_does_not_match_its_digest_is_rejected(tmp_path: Path, blob_cache: BlobCache) -> None:
    layer = layer_from_entries([Entry("/data", data=os.urandom(100_000))])
    img = append_layers(empty_image(), layer)
    path = blob_cache.path(layer.digest)
    path.write_bytes(path.read_bytes()[:-10] + b"0123456789")
    assert blob_cache.check() == [layer.digest]
    with pytest.raises(RegistryError, match=f"{layer.digest} hashes to sha256:.*do not match its digest"):
        layout.write(img, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".out")] == []


@pytest.mark.registry
def test_a_registry_blob_that_does_not_match_its_digest_is_rejected(registry, tmp_path: Path) -> None:
    layer = layer_from_entries([Entry("/data", data=os.urandom(50_000))])
    img = append_layers(empty_image(), layer)
    ref = f"{registry.host}/tamper/image:1"
    remote.push(img, ref)
    data = next(registry.root.rglob(f"blobs/sha256/{layer.digest.hex[:2]}/{layer.digest.hex}/data"))
    data.write_bytes(b"not the layer")
    fresh = BlobCache(tmp_path / "fresh")
    pulled = image_from_registry(ref, cache=fresh)
    with pytest.raises(RegistryError, match=f"{layer.digest} has 13 bytes but its descriptor says"):
        pulled.layers[0].open()
    assert not fresh.has(layer.digest) and fresh.check() == []
    data.write_bytes(os.urandom(layer.size))  # right size, wrong bytes
    with pytest.raises(RegistryError, match="hashes to sha256:.*do not match its digest"):
        pulled.layers[0].open()
    assert not fresh.has(layer.digest)


@pytest.mark.registry
def test_a_registry_manifest_that_does_not_match_its_digest_is_rejected(registry) -> None:
    img = append_layers(empty_image(), layer_from_entries([Entry("/m", data=b"m")]))
    ref = f"{registry.host}/tamper/manifest:1"
    remote.push(img, ref)
    data = next(registry.root.rglob(f"blobs/sha256/{img.digest.hex[:2]}/{img.digest.hex}/data"))
    data.write_bytes(img.manifest_bytes().replace(b'"schemaVersion":2', b'"schemaVersion":2 '))
    with pytest.raises(RegistryError, match=f"hashes to sha256:.*not {img.digest}: its bytes do not match"):
        image_from_registry(ref)
    with pytest.raises(RegistryError, match="do not match its digest"):
        image_from_registry(f"{registry.host}/tamper/manifest@{img.digest}")
