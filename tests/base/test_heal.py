"""A base cache that heals (issue 18): a tampered .deb in the download store is caught before it reaches a base,
fetched once more, and the build ends with the clean digest; a base that was not built from the signed bytes, or
whose layout no longer hashes to its record, is never reused.

The archive is a real copy of Debian's (the signed InRelease, the Packages index it vouches for and the .debs of a
base) served over HTTP on loopback (conftest's `served_mirror`), so each test sees every file the builder fetched.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from mlpk.packager.base import BaseSpec, Cache, build, pipeline
from mlpk.packager.base.resolve import Package
from mlpk.packager.errors import BuildError
from mlpk.packager.oci import Entry, append_layers, layer_from_entries, layout
from mlpk.packager.oci.digest import Digest
from mlpk.packager.oci.validate import validate_image
from tests.base.conftest import Served


@pytest.fixture(scope="module")
def clean(served_mirror: Served, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Digest]:
    """A cache (downloads, plan, image) of one clean build from the served mirror, and the base's digest."""
    root = tmp_path_factory.mktemp("clean") / "base"
    base = build(BaseSpec(mirror=served_mirror.url), Cache(root))
    validate_image(base.image)
    return root, base.image.digest


def _cache(clean: tuple[Path, Digest], tmp_path: Path, *, images: bool = False) -> Cache:
    """A copy of the clean cache for one test to spoil: downloads and plans, and the built image if asked."""
    root = tmp_path / "base"
    shutil.copytree(clean[0], root, ignore=None if images else shutil.ignore_patterns("images"))
    return Cache(root)


def _libc6(cache: Cache, url: str) -> Package:
    plan = pipeline.plan(BaseSpec(mirror=url), cache)
    return next(p for p in plan.packages if p.name == "libc6")


def _debs_fetched(served: Served) -> list[str]:
    return [path for path in served.gets if path.endswith(".deb")]


def test_a_tampered_deb_in_the_store_is_fetched_again_once_and_the_base_is_clean(
        served_mirror: Served, clean: tuple[Path, Digest], tmp_path: Path) -> None:
    cache = _cache(clean, tmp_path)
    libc6 = _libc6(cache, served_mirror.url)
    stored = cache.downloads.path(libc6.sha256, ".deb")
    other = next(p for p in stored.parent.parent.rglob("*.deb") if p != stored)
    stored.write_bytes(other.read_bytes())  # another real package under libc6's name: it would unpack fine
    served_mirror.gets.clear()

    base = build(BaseSpec(mirror=served_mirror.url), cache)

    assert base.image.digest == clean[1] and not base.cached
    assert _debs_fetched(served_mirror) == [libc6.url.removeprefix(served_mirror.url)], "fetched once, only it"
    assert Digest.of(stored.read_bytes()).hex == libc6.sha256, "the store holds the signed bytes again"
    validate_image(base.image)


def test_a_deb_that_is_wrong_in_the_store_and_on_the_mirror_is_fetched_once_then_reported(
        served_mirror: Served, clean: tuple[Path, Digest], tmp_path: Path) -> None:
    cache = _cache(clean, tmp_path)
    libc6 = _libc6(cache, served_mirror.url)
    stored = cache.downloads.path(libc6.sha256, ".deb")
    on_mirror = served_mirror.root / libc6.url.removeprefix(served_mirror.url + "/")
    original = on_mirror.read_bytes()
    stored.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    on_mirror.write_bytes(original[:-1] + bytes([original[-1] ^ 0xFF]))
    served_mirror.gets.clear()
    try:
        with pytest.raises(BuildError, match=re.escape(f"checksum mismatch for {libc6.url}: expected sha256 "
                                                       f"{libc6.sha256}")):
            build(BaseSpec(mirror=served_mirror.url), cache)
    finally:
        on_mirror.write_bytes(original)
    assert _debs_fetched(served_mirror) == [libc6.url.removeprefix(served_mirror.url)]
    assert not stored.exists(), "the bad copy was evicted and the bad download never stored"
    assert not (cache.root / "images").exists() or not any((cache.root / "images").iterdir())


@pytest.mark.parametrize("record", ["written before records", "naming the tampered digest"])
def test_a_poisoned_base_is_not_reused_once_the_deb_is_restored(
        served_mirror: Served, clean: tuple[Path, Digest], tmp_path: Path, record: str) -> None:
    """The state a tampered .deb left behind when the store trusted its file names: a base with other contents
    under the plan's key, with the record the builder wrote then (or one that names the bytes it unpacked), while
    the .deb in the store is the signed one again."""
    cache = _cache(clean, tmp_path)
    the_plan = pipeline.plan(BaseSpec(mirror=served_mirror.url), cache)
    clean_image = layout.image_from_layout(clean[0] / "images" / the_plan.key)
    extra = layer_from_entries([Entry("/usr/lib/x86_64-linux-gnu/libc.so.6", data=b"not glibc")],
                               cache=cache.blobs())
    poisoned = append_layers(clean_image, extra)
    stored = cache.image_path(the_plan.key)
    layout.write(poisoned, stored)
    meta = {"files_bytes": 1, "pruned_bytes": 0, "certificates": 148, "digest": str(poisoned.digest)}
    if record == "naming the tampered digest":
        inputs = [{"name": p.name, "version": p.version, "sha256": p.sha256, "size": p.size}
                  for p in the_plan.packages]
        inputs[0]["sha256"] = Digest.of(b"the tampered bytes").hex
        meta |= {"record": pipeline.IMAGE_RECORD, "inputs": inputs,
                 "layers": [str(la.digest) for la in poisoned.layers]}
    stored.with_suffix(".json").write_text(json.dumps(meta))

    base = build(BaseSpec(mirror=served_mirror.url), cache)

    assert base.image.digest == clean[1] and not base.cached, "the poisoned entry was rebuilt, not reused"
    again = build(BaseSpec(mirror=served_mirror.url), cache)
    assert again.cached and again.image.digest == clean[1], "the rebuilt entry is reused"
    validate_image(again.image)


def test_a_cached_base_whose_layer_blob_was_corrupted_is_rebuilt(
        served_mirror: Served, clean: tuple[Path, Digest], tmp_path: Path) -> None:
    cache = _cache(clean, tmp_path, images=True)
    the_plan = pipeline.plan(BaseSpec(mirror=served_mirror.url), cache)
    assert build(BaseSpec(mirror=served_mirror.url), cache).cached, "the copied entry is used as it is"
    (layer,) = layout.image_from_layout(cache.image_path(the_plan.key)).layers
    blob = cache.image_path(the_plan.key) / "blobs" / "sha256" / layer.digest.hex
    data = blob.read_bytes()
    blob.write_bytes(data[:1000] + bytes([data[1000] ^ 0xFF]) + data[1001:])

    base = build(BaseSpec(mirror=served_mirror.url), cache)

    assert base.image.digest == clean[1] and not base.cached
    validate_image(base.image)  # every blob of the returned image reads back whole
    assert Digest.of(blob.read_bytes()) == layer.digest
