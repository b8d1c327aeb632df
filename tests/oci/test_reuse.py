"""Sinks reuse blob files mlpack already has instead of copying their bytes (issue 16): a layer made here (or hashed
once) reaches an OCI layout as a hard link (when the caller allows) or a kernel copy, and a docker-archive by a
kernel copy, with no byte read back by mlpack; a file that changed since is streamed through its digest check."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mlpk.packager import locations
from mlpk.packager.errors import RegistryError
from mlpk.packager.oci import Entry, append_layers, empty_image, known, layer_from_entries, layout, tarball
from mlpk.packager.oci.validate import validate


def _image():
    layer = layer_from_entries([Entry("app", "dir"), Entry("app/data.bin", data=os.urandom(300_000)),
                                Entry("app/note.txt", data=b"hello\n")])
    return layer, append_layers(empty_image("linux/amd64"), layer)


def test_a_made_layer_reaches_every_sink_without_being_read(tmp_path: Path) -> None:
    layer, img = _image()
    before = known.READ_BACK.total
    linked = layout.write(img, tmp_path / "linked", link=True)
    copied = layout.write(img, tmp_path / "copied")
    archive = tarball.write(img, tmp_path / "image.tar", "reuse/app:1")
    assert known.READ_BACK.total == before, "no byte of the layer was read back"
    blob = f"blobs/sha256/{layer.digest.hex}"
    assert (linked / blob).stat().st_ino == layer.path.stat().st_ino, "a user's layout links the cached blob"
    assert (copied / blob).stat().st_ino != layer.path.stat().st_ino, "without link: a file of its own"
    assert (copied / blob).read_bytes() == layer.path.read_bytes()
    validate(layout.read(linked))
    validate(layout.read(copied))
    validate(tarball.image_from_tarball(archive))

    for stamps in (locations.cache_dir() / "layers").glob("files-*.json"):  # forget every hashed file
        stamps.unlink()
    before = known.READ_BACK.total
    streamed = tarball.write(img, tmp_path / "streamed.tar", "reuse/app:1")
    assert known.READ_BACK.total - before == layer.size, "an unknown file is read, once"
    assert streamed.read_bytes() == archive.read_bytes(), "the kernel's copy and the stream write the same archive"


def test_a_linked_blob_changed_in_a_users_layout_is_not_trusted_again(tmp_path: Path) -> None:
    layer, img = _image()
    linked = layout.write(img, tmp_path / "linked", link=True)
    blob = linked / "blobs" / "sha256" / layer.digest.hex
    data = bytearray(blob.read_bytes())
    data[100] ^= 0xFF
    blob.write_bytes(bytes(data))  # the same file as the cache's: the cache's copy changed too
    assert layer.local_file() is None
    with pytest.raises(RegistryError, match="hashes to"):
        tarball.write(img, tmp_path / "image.tar")
    assert not (tmp_path / "image.tar").exists()
