"""Layer members with path traversal are refused wherever mlpack writes, reads or rewrites a layer."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from mlpk.packager.errors import BuildError, InputError
from mlpk.packager.oci import BlobLayer, Digest, Entry, append_layers, empty_image, layer_from_dir, layer_from_entries
from mlpk.packager.oci import layout, tarball
from mlpk.packager.oci.describe import describe
from mlpk.packager.oci.layer import read_members
from mlpk.packager.oci.validate import validate

BAD = {
    "dotdot": lambda: _member("../../etc/evil"),
    "nested dotdot": lambda: _member("usr/../../evil"),
    "absolute": lambda: _member("/etc/evil"),
    "hardlink out": lambda: _member("x", tarfile.LNKTYPE, "../../etc/shadow"),
    "hardlink absolute": lambda: _member("x", tarfile.LNKTYPE, "/etc/shadow"),
    "symlink climbs out": lambda: _member("a/b", tarfile.SYMTYPE, "../../../etc"),
}


def _member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    return info


def _raw_tar(info: tarfile.TarInfo) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"") if info.isreg() else None)
    return buf.getvalue()


def _bad_layer(tmp_path: Path, info: tarfile.TarInfo) -> BlobLayer:
    """A layer whose digests are right but whose member is malicious (crafted by hand: mlpack refuses to)."""
    plain = _raw_tar(info)
    blob = gzip.compress(plain, mtime=0)
    path = tmp_path / "bad.tar.gz"
    path.write_bytes(blob)
    return BlobLayer(path, Digest.of(blob), Digest(hashlib.sha256(plain).hexdigest()), len(blob))


@pytest.mark.parametrize("case", sorted(BAD))
def test_reading_a_layer_refuses_traversal(tmp_path: Path, case: str) -> None:
    layer = _bad_layer(tmp_path, BAD[case]())
    img = append_layers(empty_image(), layer)
    with pytest.raises(InputError, match="outside the image root|escapes the image root"):
        list(read_members(layer))
    with pytest.raises(InputError, match="outside the image root|escapes the image root"):
        validate(img)
    out = layout.write(img, tmp_path / "layout")  # copying blobs does not unpack them; reading does
    with pytest.raises(InputError, match="outside the image root|escapes the image root"):
        describe(str(out))


def test_rewriting_a_plain_layer_from_a_docker_archive_refuses_traversal(tmp_path: Path) -> None:
    plain = _raw_tar(BAD["dotdot"]())
    config = {"architecture": "amd64", "os": "linux",
              "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(plain).hexdigest()}"]}}
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("layer.tar", plain), ("config.json", json.dumps(config).encode()),
                           ("manifest.json", json.dumps([{"Config": "config.json", "Layers": ["layer.tar"]}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InputError, match="escapes the image root"):
        tarball.image_from_tarball(archive)


def test_docker_archive_refuses_names_outside_it(tmp_path: Path) -> None:
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        data = json.dumps([{"Config": "../../etc/passwd", "Layers": []}]).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(InputError, match="lies outside the archive"):
        tarball.image_from_tarball(archive)


def test_building_refuses_traversal(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="contains '..'"):
        layer_from_entries([Entry("/opt/../../etc/x", data=b"x")])
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "up").symlink_to("../../../etc/passwd")
    with pytest.raises(InputError, match="resolves outside the image root"):
        layer_from_dir(src)
    (src / "a" / "up").unlink()
    (src / "a" / "abs").symlink_to("/bin/busybox")  # absolute targets resolve inside the image: allowed
    assert [m.name for m in read_members(layer_from_dir(src))] == ["a", "a/abs"]
