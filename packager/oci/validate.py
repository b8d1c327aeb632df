"""Structural validation of images (after go-containerregistry's validate.Image): run at the end of every
image-producing test, and by `mlpack inspect --verify`.

Checks that every blob matches its digest and size, that each layer's uncompressed bytes hash to the diff_id the
config records, that no layer member escapes the root, that the manifest's media types are of one family, and
that the config names a platform.
"""

from __future__ import annotations

import gzip
import hashlib
import tarfile
from dataclasses import dataclass

from mlpk.packager.errors import BuildError
from mlpk.packager.oci import mediatype
from mlpk.packager.oci.digest import CHUNK, Digest
from mlpk.packager.oci.image import Image, Index
from mlpk.packager.oci.layer import Layer
from mlpk.packager.oci.safety import check_member


@dataclass(frozen=True, slots=True)
class LayerReport:
    """What validation learned about one layer."""

    digest: Digest
    size: int
    uncompressed_size: int
    members: int


class _Tee:
    """A stream that hashes and counts the decompressed bytes tarfile reads."""

    def __init__(self, raw: gzip.GzipFile) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0

    def read(self, n: int = -1) -> bytes:
        data = self.raw.read(n)
        self.hash.update(data)
        self.count += len(data)
        return data


def check_layer(layer: Layer) -> LayerReport:
    """Verify one layer's digest, size, diff_id and members; raise BuildError or InputError on a problem."""
    members = 0
    with layer.open() as raw:
        gz = gzip.GzipFile(fileobj=raw, mode="rb")  # type: ignore[arg-type]
        tee = _Tee(gz)
        with tarfile.open(fileobj=tee, mode="r|") as tar:  # type: ignore[call-overload]
            for info in tar:
                check_member(info)
                members += 1
        while tee.read(CHUNK):  # the tar's end-of-archive padding belongs to the diff_id too
            pass
        while raw.read(CHUNK):
            pass
    if Digest(tee.hash.hexdigest()) != layer.diff_id:
        raise BuildError(f"layer {layer.digest} decompresses to {Digest(tee.hash.hexdigest())}, but the config "
                         f"records diff_id {layer.diff_id}", hint="the image is corrupt; rebuild it")
    return LayerReport(layer.digest, layer.size, tee.count, members)


def validate_image(img: Image) -> list[LayerReport]:
    """Validate a single-platform image; returns a report per layer."""
    manifest = img.manifest()
    config = img.config
    if "architecture" not in config or "os" not in config:
        raise BuildError(f"image {img.digest} has no architecture/os in its config", hint="set a platform")
    family = mediatype.FAMILY[img.media_type]
    if manifest["config"]["mediaType"] != family[0]:
        raise BuildError(f"image {img.digest} mixes manifest type {img.media_type} with config type "
                         f"{manifest['config']['mediaType']}", hint="use one family (OCI or Docker)")
    if Digest.parse(manifest["config"]["digest"]) != img.config_blob.digest:
        raise BuildError(f"image {img.digest}'s manifest names config {manifest['config']['digest']} but the config "
                         f"hashes to {img.config_blob.digest}", hint="the image is corrupt")
    diff_ids = config.get("rootfs", {}).get("diff_ids", [])
    if [str(layer.diff_id) for layer in img.layers] != diff_ids:
        raise BuildError(f"image {img.digest}: its layers' diff_ids do not match the config's rootfs.diff_ids",
                         hint="build it with mutate.append_layers")
    for desc, layer in zip(manifest["layers"], img.layers, strict=True):
        if Digest.parse(desc["digest"]) != layer.digest or int(desc["size"]) != layer.size:
            raise BuildError(f"image {img.digest}: manifest layer {desc['digest']} does not describe {layer.digest}",
                             hint="the image is corrupt")
    return [check_layer(layer) for layer in img.layers]


def validate(item: Image | Index) -> None:
    """Validate an image, or every image of an index (with matching descriptors)."""
    if isinstance(item, Index):
        descriptors = item.manifest()["manifests"]
        for desc, img in zip(descriptors, item.images, strict=True):
            if Digest.parse(desc["digest"]) != img.digest:
                raise BuildError(f"index entry {desc['digest']} does not match image {img.digest}",
                                 hint="the index is corrupt")
            validate_image(img)
        return
    validate_image(item)
