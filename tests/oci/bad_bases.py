"""Hostile base images, crafted by hand (mlpack's own layer code refuses to write them): one layer member per escape
variant, and a layer whose diff_id is wrong; each written to every kind of base source `--base` reads.

The layers carry correct digests: only what is inside them (or the diff_id the config records) is wrong, so it is
the layer-safety check that must refuse them, not a digest mismatch.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile
from collections.abc import Callable
from pathlib import Path

from mlpk.packager.oci import BlobLayer, Digest, Image, append_layers, empty_image, layout, mediatype, remote

PLATFORM = "linux/amd64"


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "", **extra: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, link
    for key, value in extra.items():
        setattr(info, key, value)
    return info


def _pax_path(path: str) -> tarfile.TarInfo:
    """A member whose ustar name is harmless but whose pax `path` record (which wins) climbs out."""
    info = member("harmless")
    info.pax_headers = {"path": path}
    return info


# name -> the members of the one layer (a tar's members in order; the last one is the escape)
VARIANTS: dict[str, Callable[[], list[tarfile.TarInfo]]] = {
    "dotdot": lambda: [member("../../tmp/x")],
    "nested dotdot": lambda: [member("usr", tarfile.DIRTYPE), member("usr/../../tmp/x")],
    "absolute": lambda: [member("/tmp/x")],
    "pax path": lambda: [_pax_path("../../tmp/x")],
    "gnu long name": lambda: [member("../../tmp/" + "x" * 120)],
    "symlink climbs out": lambda: [member("a", tarfile.DIRTYPE), member("a/b", tarfile.SYMTYPE, "../../../etc")],
    "write through an escaping symlink": lambda: [member("up", tarfile.SYMTYPE, "../../tmp"), member("up/x")],
    "hardlink out": lambda: [member("x", tarfile.LNKTYPE, "../../etc/passwd")],
    "hardlink absolute": lambda: [member("x", tarfile.LNKTYPE, "/etc/passwd")],
    "character device": lambda: [member("dev", tarfile.DIRTYPE),
                                 member("dev/mem", tarfile.CHRTYPE, devmajor=1, devminor=1)],
    "block device": lambda: [member("dev", tarfile.DIRTYPE),
                             member("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)],
}
REFUSAL = "escapes the image root|outside the image root|is a (character|block) device"
WRONG_DIFF_ID = "wrong diff_id"


def plain_tar(members: list[tarfile.TarInfo]) -> bytes:
    fmt = tarfile.PAX_FORMAT if any(m.pax_headers for m in members) else tarfile.GNU_FORMAT
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(b"") if info.isreg() else None)
    return buf.getvalue()


def layer_tar(case: str) -> tuple[bytes, Digest]:
    """(the plain layer tar of `case`, the diff_id its config will record)."""
    if case == WRONG_DIFF_ID:
        plain = plain_tar([member("etc", tarfile.DIRTYPE), member("etc/ok")])
        return plain, Digest(hashlib.sha256(plain + b"not these bytes").hexdigest())
    plain = plain_tar(VARIANTS[case]())
    return plain, Digest(hashlib.sha256(plain).hexdigest())


def image(case: str, directory: Path, *, compressed: bool = True) -> Image:
    """An amd64 image of one layer holding `case`, its blob under `directory`."""
    plain, diff_id = layer_tar(case)
    blob = gzip.compress(plain, mtime=0) if compressed else plain
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / ("layer.tar.gz" if compressed else "layer.tar")
    path.write_bytes(blob)
    media_type = mediatype.OCI_LAYER_GZIP if compressed else mediatype.OCI_LAYER_TAR
    return append_layers(empty_image(PLATFORM), BlobLayer(path, Digest.of(blob), diff_id, len(blob), media_type))


def oci_layout(case: str, directory: Path, *, compressed: bool = True) -> Path:
    """An OCI layout holding the `case` image (gzip or uncompressed layer)."""
    return layout.write(image(case, directory / "blob", compressed=compressed), directory / "layout")


def docker_archive(case: str, directory: Path, *, compressed: bool = True) -> Path:
    """A docker-archive (`docker save` format) holding the `case` image, its layer gzip or a plain tar."""
    plain, diff_id = layer_tar(case)
    blob = gzip.compress(plain, mtime=0) if compressed else plain
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [str(diff_id)]}}).encode()
    manifest = json.dumps([{"Config": "config.json", "RepoTags": ["bad/base:1"], "Layers": ["layer.tar"]}]).encode()
    directory.mkdir(parents=True, exist_ok=True)
    archive = directory / "base.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in (("layer.tar", blob), ("config.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


def pushed(case: str, directory: Path, registry_host: str, name: str) -> str:
    """The `case` image pushed as it is to a registry; returns its reference."""
    ref = f"{registry_host}/bad/{name}:1"
    remote.push(image(case, directory), ref)
    return ref
