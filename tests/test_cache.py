"""`mlpack cache ls | verify | clean | prune`, run as a user runs them, on a cache of real entries: blobs written by
the blob cache, a base-image layout with its record, and content-addressed Debian downloads."""

from __future__ import annotations

import io
import json
import os
import re
import time
from pathlib import Path

import pytest

from mlpk.packager.base import archive, pipeline
from mlpk.packager.cli.cache import cache as cache_group
from mlpk.packager.oci import Entry, append_layers, empty_image, layer_from_entries, layout
from mlpk.packager.oci.cache import BlobCache
from mlpk.packager.oci.digest import Digest

ROOT = Path(__file__).resolve().parents[1]
OLD = time.time() - 3 * 86400


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """$MLPACK_CACHE with two blobs, a base image (layout + record), two .debs in the store and a wheel."""
    root = tmp_path / "cache"
    blobs = BlobCache(root / "blobs")
    for n in (1, 2):
        data = os.urandom(10_000 * n)
        blobs.put(io.BytesIO(data), Digest.of(data), len(data))
    layer = layer_from_entries([Entry("/etc/base", data=os.urandom(5000))], cache=BlobCache(root / "base" / "blobs"))
    img = append_layers(empty_image(), layer)
    stored = root / "base" / "images" / ("b" * 64)
    layout.write(img, stored)
    stored.with_suffix(".json").write_text(json.dumps({"record": pipeline.IMAGE_RECORD, "digest": str(img.digest),
                                                       "layers": [str(layer.digest)]}))
    store = archive.Store(root / "base" / "downloads")
    for name in ("libfoo", "libbar"):
        data = f"{name} package".encode()
        path = store.path(Digest.of(data).hex, ".deb")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    wheel = root / "wheels" / "cp311-x86_64-glibc2.36" / "demo-1.0-py3-none-any.whl"
    wheel.parent.mkdir(parents=True)
    wheel.write_bytes(b"w" * 3000)
    return root


def _run(mlpack, cache: Path, *args: str):
    return mlpack(*args, env={"MLPACK_CACHE": str(cache)})


def _spoil(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])


def _sizes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_ls_lists_each_area_with_entries_and_bytes(mlpack, cache: Path) -> None:
    done = _run(mlpack, cache, "--json", "cache", "ls")
    assert done.returncode == 0, done.stderr
    areas = {a["area"]: a for a in json.loads(done.stdout)["areas"]}
    assert list(areas) == ["blobs", "debs", "bases", "layers", "wheels", "runs"], "corpus only when present"
    assert areas["blobs"]["entries"] == 2 and areas["blobs"]["bytes"] == _sizes(cache / "blobs")
    assert areas["debs"]["entries"] == 2 and areas["bases"]["entries"] == 1 and areas["layers"]["entries"] == 0
    assert areas["wheels"] == {"area": "wheels", "entries": 1, "bytes": 3000, "folders": [str(cache / "wheels")],
                               "what": areas["wheels"]["what"]}
    human = _run(mlpack, cache, "cache", "ls").stdout
    assert re.search(r"^blobs +2 entries", human, re.M) and "total" in human


def test_verify_finds_planted_bad_entries_and_fix_evicts_only_them(mlpack, cache: Path) -> None:
    assert _run(mlpack, cache, "cache", "verify").returncode == 0
    bad_blob = sorted((cache / "blobs" / "sha256").iterdir())[0]
    good_blob = sorted((cache / "blobs" / "sha256").iterdir())[1]
    bad_deb = sorted((cache / "base" / "downloads").rglob("*.deb"))[0]
    image = cache / "base" / "images" / ("b" * 64)
    _spoil(bad_blob)
    _spoil(bad_deb)
    (layer_blob,) = [p for p in (image / "blobs" / "sha256").iterdir() if p.stat().st_size > 1000]
    _spoil(layer_blob)

    done = _run(mlpack, cache, "cache", "verify")
    assert done.returncode == 1, done.stdout + done.stderr
    assert f"bad blobs {bad_blob}: its bytes do not hash to its name" in done.stdout
    assert f"bad debs {bad_deb}" in done.stdout and f"bad bases {image}" in done.stdout
    assert "3 bad entries remain: run `mlpack cache verify --fix`" in done.stdout
    assert bad_blob.exists() and bad_deb.exists(), "verify alone changes nothing"

    fixed = _run(mlpack, cache, "--json", "cache", "verify", "--fix")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    result = json.loads(fixed.stdout)
    assert {(b["area"], b["path"], b["evicted"]) for b in result["bad"]} == {
        ("blobs", str(bad_blob), True), ("debs", str(bad_deb), True), ("bases", str(image), True)}
    assert result["remaining"] == 0 and result["checked"] == {"bases": 2, "blobs": 2, "debs": 2}
    assert not bad_blob.exists() and not bad_deb.exists() and not image.exists()
    assert not image.with_suffix(".json").exists() and good_blob.exists()
    assert _run(mlpack, cache, "cache", "verify").returncode == 0


def test_clean_removes_the_named_areas_or_all_and_says_what_it_freed(mlpack, cache: Path) -> None:
    blob_bytes = _sizes(cache / "blobs")
    done = _run(mlpack, cache, "--json", "cache", "clean", "blobs")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"removed": [{"area": "blobs", "entries": 2, "bytes": blob_bytes}],
                                       "bytes": blob_bytes}
    assert not (cache / "blobs").exists() and (cache / "wheels").exists() and (cache / "base" / "downloads").exists()

    wrong = _run(mlpack, cache, "cache", "clean", "blobz")
    assert wrong.returncode == 2 and wrong.stderr.count("\n") == 1 and "Traceback" not in wrong.stderr
    assert "'blobz' is not a cache area" in wrong.stderr and "blobs, debs, bases, layers, wheels" in wrong.stderr

    everything = _run(mlpack, cache, "cache", "clean")
    assert everything.returncode == 0, everything.stderr
    assert "removed wheels: 1 entries, 0.0 MB" in everything.stdout and "freed " in everything.stdout
    assert [p for p in cache.rglob("*") if p.is_file()] == []


def test_prune_removes_what_killed_writers_left_and_old_entries(mlpack, cache: Path) -> None:
    stale_tmp = cache / "blobs" / "tmp" / "12345-killed"
    fresh_tmp = cache / "blobs" / "tmp" / f"{os.getpid()}-writing"
    partial = next((cache / "base" / "downloads").iterdir()) / f"{archive.PARTIAL}killed"
    for path in (stale_tmp, fresh_tmp, partial):
        path.write_bytes(b"half")
    os.utime(stale_tmp, (OLD, OLD))
    os.utime(partial, (OLD, OLD))
    old_blob = sorted((cache / "blobs" / "sha256").iterdir())[0]
    os.utime(old_blob, (OLD, OLD))

    done = _run(mlpack, cache, "--json", "cache", "prune")
    assert done.returncode == 0, done.stderr
    removed = {r["area"]: r["entries"] for r in json.loads(done.stdout)["removed"]}
    assert removed == {"blobs": 1, "debs": 1, "bases": 0, "layers": 0, "runs": 0}
    assert not stale_tmp.exists() and not partial.exists() and fresh_tmp.exists(), "a live writer's file stays"
    assert old_blob.exists(), "entries stay without --older-than"

    aged = _run(mlpack, cache, "--json", "cache", "prune", "--older-than", "2")
    assert aged.returncode == 0, aged.stderr
    assert {r["area"]: r["entries"] for r in json.loads(aged.stdout)["removed"]}["blobs"] == 1
    assert not old_blob.exists() and len(list((cache / "blobs" / "sha256").iterdir())) == 1


def test_every_hint_that_names_mlpack_cache_names_a_subcommand_that_exists() -> None:
    named = set()
    for path in [*(ROOT / "packager").rglob("*.py"), ROOT / "README.md", *(ROOT / "docs").glob("*.md")]:
        named |= set(re.findall(r"mlpack cache ([a-z]+)", path.read_text()))
    assert named, "the errors about cached files point to `mlpack cache`"
    assert named <= set(cache_group.commands), named - set(cache_group.commands)
